"""Fixtures for the gRPC tests: a gRPC server in this process on a free port (the rest: tests/fixtures.py).

The gRPC server runs in the test process, as it runs inside the web worker process in `make run`: beside the
live HTTP server (pytest-django's `live_server`), over the same stores, gateway and database.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from qdrant_client import QdrantClient
from qdrant_client import grpc as pb

from console.clusters.services import CreatedCluster
from inference.grpc.server import build_server


@pytest.fixture
def grpc_port() -> Iterator[int]:
    """A running gRPC server's port on 127.0.0.1."""
    server, port = build_server(port=0, host="127.0.0.1")
    server.start()
    yield port
    server.stop(0).wait()


@pytest.fixture
def grpc_client(base_url: str, grpc_port: int, cluster: CreatedCluster) -> Iterator[QdrantClient]:
    """The official Python client over gRPC (REST only for its version check)."""
    client = QdrantClient(
        url=base_url, grpc_port=grpc_port, prefer_grpc=True, api_key=cluster.api_key, cloud_inference=True,
        timeout=60,
    )  # fmt: skip
    yield client
    client.close()


@pytest.fixture
def rest_client(base_url: str, cluster: CreatedCluster) -> Iterator[QdrantClient]:
    """The official Python client over REST, for comparing answers."""
    client = QdrantClient(url=base_url, api_key=cluster.api_key, cloud_inference=True, timeout=60)
    yield client
    client.close()


class Stubs:
    """Raw gRPC stubs on one channel, for asserting status codes, metadata and `usage` fields."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.points = pb.PointsStub(self.channel)
        self.collections = pb.CollectionsStub(self.channel)
        self.snapshots = pb.SnapshotsStub(self.channel)
        self.qdrant = pb.QdrantStub(self.channel)


@pytest.fixture
def stubs(grpc_port: int) -> Iterator[Stubs]:
    """Raw stubs on the test server."""
    s = Stubs(grpc_port)
    yield s
    s.channel.close()
