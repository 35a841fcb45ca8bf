"""Operations of the inference app that are not Qdrant's data plane: the inference-service protocol."""

from __future__ import annotations

from typing import Any

from inference.engine.types import EmbedRequest, InputType, Kind, vector_json
from inference.errors import Forbidden
from inference.gateway import Context


def inference_service_embed(
    ctx: Context, *, inputs: list[dict[str, Any]], inference: str | None = None
) -> tuple[list[Any], dict[str, int]]:
    """Embed the inputs of one inference-service request (a gateway operation), in order.

    `inference: "update"` embeds documents, `"search"` queries. Identical inputs are computed and billed once.
    """
    if not ctx.cluster.inference_enabled:
        raise Forbidden(f"Inference is not enabled for cluster {ctx.cluster.id}")
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
    result = ctx.embed(requests)
    return [vector_json(r.vector) for r in result.results], result.usage
