"""Thin REST endpoints of the inference app (validate -> selector/service -> output serializer)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inference.engine.types import EngineError
from inference.selectors import model_list
from inference.serializers import (
    CatalogModelSerializer,
    InferenceRequestSerializer,
    InferenceResponseSerializer,
)
from inference.services import InferenceServiceError, inference_service_embed


class ModelListApi(APIView):
    """The model catalog: modality, dimensions, context window, price per 1M tokens, installed here."""

    authentication_classes: list[type] = []
    permission_classes: list[type] = []

    @extend_schema(responses=CatalogModelSerializer(many=True))
    def get(self, request: Request) -> Response:
        """List every catalogued model."""
        return Response(CatalogModelSerializer(model_list(), many=True).data)


class InferenceServiceApi(APIView):
    """Qdrant's external inference-service protocol, so a self-hosted Qdrant can embed through us.

    A Qdrant server configured with `inference.address` pointing here POSTs
    `{"inputs": [{data, data_type, model, options}], "inference": "update"|"search", "token"}` and reads
    `{"embeddings": [...], "usage": {"models": {...}}}`. The token is the cluster's inference token, and
    usage is metered to that cluster. Errors are `{"error": msg}` with the status codes Qdrant maps.
    """

    authentication_classes: list[type] = []
    permission_classes: list[type] = []
    parser_classes = [JSONParser]

    @extend_schema(request=InferenceRequestSerializer, responses=InferenceResponseSerializer)
    def post(self, request: Request) -> Response:
        """Embed the inputs in order and report usage."""
        try:
            data = request.data
        except ParseError as exc:
            return Response({"error": f"Invalid JSON: {exc.detail}"}, status=400)
        serializer = InferenceRequestSerializer(data=data)
        if not serializer.is_valid():
            return Response({"error": _first_error(serializer.errors)}, status=400)
        try:
            embeddings, usage = inference_service_embed(**serializer.validated_data)
        except InferenceServiceError as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
            return Response({"error": str(exc)}, status=exc.status_code, headers=headers)
        except EngineError as exc:
            return Response({"error": str(exc)}, status=exc.status_code)
        return Response(
            {"embeddings": embeddings, "usage": {"models": {m: {"tokens": t} for m, t in usage.items()}}}
        )


def _first_error(errors: Any) -> str:
    """Flatten DRF's nested validation errors into one readable line."""
    if isinstance(errors, dict):
        for field, value in errors.items():
            return f"{field}: {_first_error(value)}"
    if isinstance(errors, list) and errors:
        return _first_error(errors[0])
    return str(errors)
