"""Thin REST endpoints of the inference app (validate -> selector/service -> output serializer)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inference.selectors import model_list
from inference.serializers import CatalogModelSerializer


class ModelListApi(APIView):
    """The model catalog: modality, dimensions, context window, price per 1M tokens, installed here."""

    authentication_classes: list[type] = []
    permission_classes: list[type] = []

    @extend_schema(responses=CatalogModelSerializer(many=True))
    def get(self, request: Request) -> Response:
        """List every catalogued model."""
        return Response(CatalogModelSerializer(model_list(), many=True).data)
