"""The console's JSON API for a cluster's inference toggle and its restart jobs (thin DRF views).

Each view validates its input, makes one selector or service call and answers through an output
serializer. It accepts the console's session (with CSRF, as DRF enforces for sessions) and API tokens
(`Authorization: Token <t>`, from `manage.py create_user`). Members of a cluster's account may read it;
only its admins may toggle or retry. A cluster or job of another account answers 404, as a missing one.
Domain errors carry their status (`inference.errors`); `inference.http` renders them.
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from console.clusters.models import Cluster, RestartJob
from console.clusters.permissions import ConsoleRolePermission
from console.clusters.selectors import (
    cluster_get_for_user,
    cluster_inference_state,
    restart_job_get_for_user,
)
from console.clusters.serializers import (
    InferenceStateSerializer,
    InferenceToggleInputSerializer,
    RestartJobSerializer,
)
from console.clusters.services import InferenceNotEligible, cluster_inference_toggle, restart_job_retry
from inference.errors import ApiError
from inference.http import console_error


class ConsoleApi(APIView):
    """Base of the console API views: token first (so anonymous calls get 401), then the session."""

    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [ConsoleRolePermission]
    parser_classes = [JSONParser]

    def handle_exception(self, exc: Exception) -> Response:
        """Domain errors as DRF's `{"detail": ...}`; DRF's own errors (auth, validation) as DRF has them."""
        if isinstance(exc, InferenceNotEligible):
            eligibility = {"eligible": False, "reason": exc.eligibility.reason}
            return console_error(exc, eligibility=eligibility)
        if isinstance(exc, ApiError):
            return console_error(exc)
        return super().handle_exception(exc)

    def cluster_or_404(self, request: Request, cluster_id: str) -> Cluster:
        """The cluster if the user may see it (404 otherwise, as for a missing one), permission-checked."""
        cluster = cluster_get_for_user(user=request.user, cluster_id=cluster_id)
        if cluster is None:
            raise Http404(f"cluster {cluster_id} does not exist")
        self.check_object_permissions(request, cluster)
        return cluster

    def job_or_404(self, request: Request, job_id: int) -> RestartJob:
        """The restart job if the user may see its cluster (404 otherwise), permission-checked."""
        job = restart_job_get_for_user(user=request.user, job_id=job_id)
        if job is None:
            raise Http404(f"restart job {job_id} does not exist")
        self.check_object_permissions(request, job)
        return job


class ClusterInferenceApi(ConsoleApi):
    """`GET|PATCH /api/v1/clusters/<id>/inference`: a cluster's inference toggle.

    PATCH `{"enabled": bool}` answers 202 while a restart job applies the change (the job is in the
    answer; poll `/api/v1/jobs/<id>`) and 200 when nothing needed to restart.
    """

    @extend_schema(responses=InferenceStateSerializer)
    def get(self, request: Request, cluster_id: str) -> Response:
        """Effective and desired state, eligibility and the current job."""
        cluster = self.cluster_or_404(request, cluster_id)
        return Response(InferenceStateSerializer(cluster_inference_state(cluster=cluster)).data)

    @extend_schema(request=InferenceToggleInputSerializer, responses=InferenceStateSerializer)
    def patch(self, request: Request, cluster_id: str) -> Response:
        """Turn inference on or off; the cluster restarts to apply it."""
        cluster = self.cluster_or_404(request, cluster_id)
        serializer = InferenceToggleInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = cluster_inference_toggle(
            cluster=cluster, enabled=serializer.validated_data["enabled"], actor=request.user
        )
        data = InferenceStateSerializer(cluster_inference_state(cluster=cluster)).data
        return Response(data, status=status.HTTP_202_ACCEPTED if job is not None else status.HTTP_200_OK)


class RestartJobApi(ConsoleApi):
    """`GET /api/v1/jobs/<id>`: one restart job's state, step and progress."""

    @extend_schema(responses=RestartJobSerializer)
    def get(self, request: Request, job_id: int) -> Response:
        """The job."""
        return Response(RestartJobSerializer(self.job_or_404(request, job_id)).data)


class RestartJobRetryApi(ConsoleApi):
    """`POST /api/v1/jobs/<id>/retry`: run a failed restart again (as a new job)."""

    @extend_schema(request=None, responses=RestartJobSerializer)
    def post(self, request: Request, job_id: int) -> Response:
        """Start the new job; 409 if the job did not fail or a newer one exists."""
        retry = restart_job_retry(job=self.job_or_404(request, job_id), actor=request.user)
        return Response(RestartJobSerializer(retry).data, status=status.HTTP_202_ACCEPTED)
