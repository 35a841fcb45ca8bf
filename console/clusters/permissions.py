"""DRF permissions of the console API, from the user's console role (staff count as admins)."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from console.clusters.models import Membership
from console.clusters.selectors import user_role


class ConsoleRolePermission(BasePermission):
    """Viewers and admins may read; only admins may change anything. Users without a role get nothing."""

    message = "Only console admins may change this."

    def has_permission(self, request: Request, view: APIView) -> bool:
        """Authenticated with a console role; writes need the admin role."""
        role = user_role(user=request.user)
        if role is None:
            self.message = "This user has no console role."
            return False
        if request.method in SAFE_METHODS:
            return True
        return role == Membership.Role.ADMIN

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        """Every cluster is visible to every console user (there are no organisations yet)."""
        return self.has_permission(request, view)
