"""Qdrant's gRPC API (`qdrant.Qdrant`, `Collections`, `Points`, `Snapshots`) over the inference gateway.

`servicers` (the RPCs), `convert` (gRPC <-> REST JSON, through qdrant-client's conversions), `errors` (the one
mapping of errors to gRPC status codes) and `server` (the server inside the web process). Imports no
console.* or billing.* module: clusters, keys and usage are reached through `inference.gateway`.
"""
