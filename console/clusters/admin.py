"""Django admin for operators: accounts, clusters, API keys (hashed, never shown), roles per account,
restart jobs, toggles, and the live web processes (replicas).

What has rules goes through the services: inference is toggled from the console or its API (a restart job
applies it), keys are created in the console (the secret is shown once) and revoked here with an action.
Restart jobs, the toggle audit and the replica registry are read-only.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from console.clusters.models import (
    Account,
    ApiKey,
    Cluster,
    InferenceToggle,
    Membership,
    Replica,
    RestartJob,
)
from console.clusters.services import api_key_revoke


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows an operator may look at but never add, change or delete."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Rows come from the system."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Viewing only."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Viewing only."""
        return False


class MembershipInline(admin.TabularInline):
    """The members of an account and their roles, on the account's page."""

    model = Membership
    extra = 0
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)
    autocomplete_fields = ("user",)


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    """Accounts (organisations): their members and roles; their clusters are listed under Clusters."""

    list_display = ("name", "cluster_count", "created_at")
    search_fields = ("name",)
    fields = ("name", "created_at")
    readonly_fields = ("created_at",)
    inlines = (MembershipInline,)

    @admin.display(description="clusters")
    def cluster_count(self, obj: Account) -> int:
        """How many clusters the account owns."""
        return obj.clusters.count()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """An account that owns clusters keeps them (and their billing history): not deletable then."""
        return obj is None or not obj.clusters.exists()


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    """Clusters: rename or move to another account; everything else is set at creation or changed by a
    restart job."""

    list_display = ("name", "id", "account", "region", "tier", "status", "inference_enabled", "created_at")
    list_filter = ("account", "tier", "region", "status", "inference_enabled")
    list_select_related = ("account",)
    search_fields = ("id", "name", "account__name")
    # Never shown: the remote server's key and the inference token's hash.
    fields = (
        "id",
        "account",
        "name",
        "region",
        "tier",
        "status",
        "inference_enabled",
        "inference_desired",
        "storage_backend",
        "remote_url",
        "created_at",
    )
    readonly_fields = tuple(f for f in fields if f not in ("name", "account"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Clusters are created with their secrets (`create_cluster`), which the admin cannot show once."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Usage ledger rows keep their cluster (billing history)."""
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Data-plane keys: who has one, and revoking it. The hash is never shown."""

    list_display = ("prefix", "name", "cluster", "read_only", "created_at", "revoked_at")
    list_filter = ("read_only",)
    search_fields = ("prefix", "name", "cluster__id", "cluster__name")
    fields = ("cluster", "name", "prefix", "read_only", "created_at", "revoked_at")
    readonly_fields = fields
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Keys are created in the console, where the secret is shown once."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Revoke instead: revoked keys stay listed for audit."""
        return False

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        """Revoke each selected key; it stops authenticating on the next request."""
        for key in queryset:
            api_key_revoke(api_key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    """Console roles (admin or viewer) of users, one per account."""

    list_display = ("user", "account", "role", "created_at")
    list_filter = ("account", "role")
    list_select_related = ("user", "account")
    search_fields = ("user__username", "account__name")


@admin.register(RestartJob)
class RestartJobAdmin(ReadOnlyAdmin):
    """Restart jobs, as the worker recorded them."""

    list_display = ("id", "cluster", "target_enabled", "state", "step", "progress", "attempts", "created_at")
    list_filter = ("state",)
    search_fields = ("cluster__id",)


@admin.register(InferenceToggle)
class InferenceToggleAdmin(ReadOnlyAdmin):
    """Who toggled inference, when, and the job that applied it."""

    list_display = ("created_at", "cluster", "actor_username", "from_state", "to_state", "job")


@admin.register(Replica)
class ReplicaAdmin(ReadOnlyAdmin):
    """The web processes registered for restarts, and when each last beat (dead ones until pruned)."""

    list_display = ("host", "pid", "control_url", "started_at", "seen_at", "id")
    search_fields = ("host", "id")
