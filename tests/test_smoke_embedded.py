"""Smoke test of the embedded default, as `make run` serves it: granian over SQLite and Qdrant Edge.

The server runs as a real process in a fresh DATA_DIR with no DATABASE_URL / CELERY_BROKER_URL, is driven
with the official qdrant-client, then SIGKILLed right after an acknowledged upsert and started again:
the acknowledged points must still be there.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from qdrant_client import QdrantClient, models

from tests.conftest import MINILM
from tests.processes import create_cluster, kill_group, start_server


def test_embedded_default_serves_and_survives_sigkill(
    embedded_env: dict[str, str], server_processes: list[subprocess.Popen[bytes]]
) -> None:
    created = create_cluster(embedded_env, "smoke")
    assert created["url"] == f"http://127.0.0.1:{embedded_env['PORT']}/clusters/{created['id']}"
    assert (Path(embedded_env["DATA_DIR"]) / "db.sqlite3").exists()

    server_processes.append(start_server(embedded_env))
    client = QdrantClient(url=created["url"], api_key=created["api_key"], cloud_inference=True, timeout=60)
    client.create_collection(
        "s", vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
    )
    client.upsert(
        "s",
        points=[
            models.PointStruct(id=i, vector=models.Document(text=f"note {i}", model=MINILM))
            for i in range(50)
        ],
        wait=True,
    )
    # Acknowledged: kill the server without any chance to flush or close.
    kill_group(server_processes[0])

    client.close()  # its pooled connection died with the server

    server_processes.append(start_server(embedded_env))
    client = QdrantClient(url=created["url"], api_key=created["api_key"], cloud_inference=True, timeout=60)
    assert client.count("s").count == 50
    hits = client.query_points("s", query=models.Document(text="note 7", model=MINILM), limit=1).points
    assert hits[0].id == 7
    client.close()
