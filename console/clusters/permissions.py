"""DRF permissions of the console API, from the user's role in the cluster's account (staff are admins)."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from console.clusters.models import Cluster, Membership, RestartJob
from console.clusters.selectors import user_cluster_role, user_has_console_access


class ConsoleRolePermission(BasePermission):
    """Members of a cluster's account may read it; only its admins may change it. Users without any
    membership get nothing.

    Whether a cluster is visible at all is the view's business (it looks clusters up through
    `selectors.cluster_get_for_user` and answers 404 for another account's), so this only ever sees objects
    of the user's accounts: a viewer asking to change one gets 403.
    """

    message = "Only admins of the cluster's account may change it."

    def has_permission(self, request: Request, view: APIView) -> bool:
        """Signed in and a member of at least one account (or staff)."""
        if not user_has_console_access(user=request.user):
            self.message = "This user has no console role."
            return False
        return True

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        """A cluster (or a job of one): any role reads; writes need the admin role in its account."""
        cluster = obj.cluster if isinstance(obj, RestartJob) else obj
        if not isinstance(cluster, Cluster):
            return False
        role = user_cluster_role(user=request.user, cluster=cluster)
        if role is None:
            return False
        return request.method in SAFE_METHODS or role == Membership.Role.ADMIN
