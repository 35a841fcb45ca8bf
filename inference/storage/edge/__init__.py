"""Embedded backend: a cluster's collections as Qdrant Edge shards inside this process.

* :mod:`.store` - :class:`EdgeStore`: shards, locks, the collection registry, Edge errors to Qdrant's;
* :mod:`.config` - collection configuration and payload-index schemas, to Edge and back to REST JSON;
* :mod:`.filters` - filters and conditions;
* :mod:`.points` - points, vectors, payload selectors in; records and scored points out;
* :mod:`.query` - the universal query (prefetch, fusion, formula, MMR, recommend, discover ...);
* :mod:`.common` - type aliases and small helpers shared by the above.
"""

from .store import EdgeStore, map_edge_error

__all__ = ["EdgeStore", "map_edge_error"]
