"""Storage of a cluster's vector data behind one interface, with an embedded and a remote backend.

* :class:`~inference.storage.base.VectorStore` - the interface (Qdrant REST shapes in and out);
* :class:`~inference.storage.edge.EdgeStore` - embedded, on Qdrant Edge shards in this process;
* :class:`~inference.storage.remote.RemoteStore` - a real Qdrant server through qdrant-client.
"""

from .base import (
    DEFAULT_VECTOR_NAME,
    BadRequest,
    CollectionExists,
    CollectionNotFound,
    DenseVectorSpec,
    PointNotFound,
    SparseVectorSpec,
    StorageError,
    StoreClosed,
    Unsupported,
    VectorConfig,
    VectorStore,
)
from .edge import EdgeStore
from .remote import RemoteStore

__all__ = [
    "DEFAULT_VECTOR_NAME",
    "BadRequest",
    "CollectionExists",
    "CollectionNotFound",
    "DenseVectorSpec",
    "EdgeStore",
    "PointNotFound",
    "RemoteStore",
    "SparseVectorSpec",
    "StorageError",
    "StoreClosed",
    "Unsupported",
    "VectorConfig",
    "VectorStore",
]
