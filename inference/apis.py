"""Thin REST endpoints of the inference app (validate -> selector/service -> output serializer)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inference import gateway
from inference.http import inference_service_error
from inference.selectors import model_list, provider_list
from inference.serializers import (
    CatalogModelSerializer,
    InferenceRequestSerializer,
    InferenceResponseSerializer,
    ProviderSerializer,
)
from inference.services import inference_service_embed


class ModelListApi(APIView):
    """The model catalog: modality, dimensions, context window, price per 1M tokens, installed here."""

    authentication_classes: list[type] = []
    permission_classes: list[type] = []

    @extend_schema(responses=CatalogModelSerializer(many=True))
    def get(self, request: Request) -> Response:
        """List every catalogued model; the external providers are listed at `/api/v1/providers` (Link)."""
        response = Response(CatalogModelSerializer(model_list(), many=True).data)
        response["Link"] = '</api/v1/providers>; rel="providers"'
        return response


class ProviderListApi(APIView):
    """The external providers (OpenAI, Cohere, Jina AI, OpenRouter) and how to call their models."""

    authentication_classes: list[type] = []
    permission_classes: list[type] = []

    @extend_schema(responses=ProviderSerializer(many=True))
    def get(self, request: Request) -> Response:
        """List the providers; their own model lists are theirs (see `docs_url`)."""
        return Response(ProviderSerializer(provider_list(), many=True).data)


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
        serializer = InferenceRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        cluster = gateway.authenticate_inference_token(data.pop("token", None) or "")
        served = gateway.serve(cluster_id=cluster.id, operation=inference_service_embed, **data)
        models = {model: {"tokens": tokens} for model, tokens in served.usage.items()}
        return Response({"embeddings": served.result, "usage": {"models": models}})

    def handle_exception(self, exc: Exception) -> Response:
        """Errors as the protocol has them: `{"error": ...}` with the status Qdrant maps."""
        return inference_service_error(exc)
