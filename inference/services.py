"""Writes of the inference app: running the inference-service protocol for a cluster."""

from __future__ import annotations

import uuid
from typing import Any

from billing.services import RateLimited, usage_limit_check
from console.clusters.selectors import cluster_for_inference_token
from inference.embedding import get_engine
from inference.engine.types import EmbedRequest, InputType, Kind, vector_json
from inference.usage import emit_usage


class InferenceServiceError(Exception):
    """A refused inference-service call, with the HTTP status Qdrant maps (401 -> auth failed, 400 -> ...)."""

    def __init__(self, message: str, status_code: int, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


def inference_service_embed(
    *, inputs: list[dict[str, Any]], inference: str | None = None, token: str | None = None
) -> tuple[list[Any], dict[str, int]]:
    """Embed the inputs of one inference-service request for the cluster that owns `token`.

    `inference: "update"` embeds documents, `"search"` queries. Usage is emitted to that cluster after
    every input succeeded; identical inputs are computed and billed once.
    """
    cluster = cluster_for_inference_token(token or "")
    if cluster is None:
        raise InferenceServiceError("Invalid or missing inference token", 401)
    if not cluster.inference_enabled:
        raise InferenceServiceError(f"Inference is not enabled for cluster {cluster.id}", 403)
    try:
        usage_limit_check(cluster_id=cluster.id)
    except RateLimited as exc:
        raise InferenceServiceError(str(exc), 429, exc.retry_after_seconds) from exc
    kind = Kind.QUERY if inference == "search" else Kind.DOCUMENT
    requests = [
        EmbedRequest(
            model=item["model"],
            kind=kind,
            input_type=InputType(item["data_type"]),
            data=item["data"],
            options=item.get("options"),
        )
        for item in inputs
    ]
    result = get_engine().embed(requests)
    emit_usage(cluster_id=cluster.id, request_id=uuid.uuid4().hex, usage=result.usage)
    return [vector_json(r.vector) for r in result.results], result.usage
