"""Thin REST endpoints of billing (validate -> one selector call -> output serializer).

Readable by members (viewers and admins) of the cluster's account and by staff; anonymous users and users
without a role are refused, and a cluster of another account answers 404, as a missing one.
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.selectors import statement_get, usage_series
from billing.serializers import (
    StatementQuerySerializer,
    StatementSerializer,
    UsageQuerySerializer,
    UsageSeriesSerializer,
    statement_csv,
)
from console.clusters.models import Cluster
from console.clusters.permissions import ConsoleRolePermission
from console.clusters.selectors import cluster_get_for_user


class BillingApi(APIView):
    """Base of the billing endpoints: members of the cluster's account may read."""

    # IsAuthenticated first, so an anonymous request is told to authenticate rather than "no role".
    permission_classes = [IsAuthenticated, ConsoleRolePermission]

    def cluster_or_404(self, request: Request, cluster_id: str) -> Cluster:
        """The cluster if the user may see it (404 otherwise, as for a missing one), permission-checked."""
        cluster = cluster_get_for_user(user=request.user, cluster_id=cluster_id)
        if cluster is None:
            raise NotFound(f"Cluster {cluster_id} does not exist.")
        self.check_object_permissions(request, cluster)
        return cluster


class ClusterUsageApi(BillingApi):
    """Token usage of a cluster per model, bucketed by UTC hour, day or month (for charts)."""

    @extend_schema(
        operation_id="cluster_usage",
        tags=["billing"],
        parameters=[
            OpenApiParameter(
                "from", OpenApiTypes.DATETIME, description="Start (floored to the granularity)."
            ),
            OpenApiParameter("to", OpenApiTypes.DATETIME, description="Exclusive end (default now)."),
            OpenApiParameter("granularity", str, enum=["hour", "day", "month"], description="Default day."),
            OpenApiParameter("model", str, description="One model only."),
        ],
        responses=UsageSeriesSerializer,
    )
    def get(self, request: Request, cluster_id: str) -> Response:
        """Series of whole buckets that start in [from, to), zeros included."""
        cluster = self.cluster_or_404(request, cluster_id)
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        series = usage_series(cluster_id=cluster.pk, **query.validated_data)
        return Response(UsageSeriesSerializer(series).data)


class ClusterStatementApi(BillingApi):
    """A cluster's statement for one UTC month (`YYYY-MM`), as JSON."""

    @extend_schema(operation_id="cluster_statement", tags=["billing"], responses=StatementSerializer)
    def get(self, request: Request, cluster_id: str, month: str) -> Response:
        """Lines per model (used, free, billable, cost) and totals."""
        cluster = self.cluster_or_404(request, cluster_id)
        query = StatementQuerySerializer(data={"month": month})
        query.is_valid(raise_exception=True)
        statement = statement_get(cluster_id=cluster.pk, month=query.validated_data["month"])
        return Response(StatementSerializer(statement).data)


class ClusterStatementCsvApi(BillingApi):
    """The same statement as CSV: one row per model and a total row."""

    @extend_schema(
        operation_id="cluster_statement_csv",
        tags=["billing"],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request: Request, cluster_id: str, month: str) -> HttpResponse:
        """Download the statement."""
        cluster = self.cluster_or_404(request, cluster_id)
        query = StatementQuerySerializer(data={"month": month})
        query.is_valid(raise_exception=True)
        statement = statement_get(cluster_id=cluster.pk, month=query.validated_data["month"])
        response = HttpResponse(statement_csv(statement), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = (
            f'attachment; filename="statement-{cluster.pk}-{statement.month}.csv"'
        )
        return response
