"""Django admin for operators: prices, free allowances and cluster limits (through the services), the ledger.

Writes go through `billing.services`, which keep the history honest: a price change is a new row that
starts in the future (past usage keeps its price), an allowance changes from this month on, and a limit is
a positive number of tokens per minute (deleting it removes the limit). The usage ledger and its roll-ups
are read-only: they are what customers are billed for.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from billing.models import ClusterLimit, ModelAllowance, ModelPrice, UsageRecord, UsageRollup
from billing.services import (
    BillingError,
    cluster_limit_set,
    model_allowance_check,
    model_allowance_set,
    model_price_check,
    model_price_set,
)
from console.clusters.admin import ReadOnlyAdmin
from inference import catalog


def _model_choices() -> list[tuple[str, str]]:
    return [(e.name, e.name) for e in catalog.CATALOG]


class ModelPriceForm(forms.ModelForm):
    """A new step of a model's price history, checked by the service before it is saved."""

    model = forms.ChoiceField(choices=_model_choices)

    class Meta:
        model = ModelPrice
        fields = ("model", "price_per_million", "effective_from")

    def clean(self) -> dict[str, Any]:
        """Refuse what the service refuses (unknown model, retroactive change), with its reason."""
        data = super().clean() or {}
        if {"model", "price_per_million", "effective_from"} <= data.keys():
            try:
                model_price_check(
                    model=data["model"],
                    price_per_million=data["price_per_million"],
                    effective_from=data["effective_from"],
                )
            except BillingError as exc:
                raise forms.ValidationError(str(exc)) from exc
        return data


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """Price history: add a change; existing steps are never edited or deleted."""

    form = ModelPriceForm
    list_display = ("model", "price_per_million", "effective_from", "created_at")
    list_filter = ("model",)
    ordering = ("model", "-effective_from")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """History is append-only (viewing stays allowed)."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Usage rows point at the price they were billed at."""
        return False

    def save_model(self, request: HttpRequest, obj: ModelPrice, form: Any, change: bool) -> None:
        """Create the row through the service (which checks it again, atomically)."""
        saved = model_price_set(
            model=obj.model, price_per_million=obj.price_per_million, effective_from=obj.effective_from
        )
        obj.pk, obj.created_at = saved.pk, saved.created_at


class ModelAllowanceForm(forms.ModelForm):
    """A model's free tokens per cluster per month, from a month on (this one or later)."""

    model = forms.ChoiceField(choices=_model_choices)

    class Meta:
        model = ModelAllowance
        fields = ("model", "free_tokens_per_month", "effective_month")

    def clean(self) -> dict[str, Any]:
        """Refuse closed months and days other than the first, with the service's reason."""
        data = super().clean() or {}
        if {"model", "free_tokens_per_month", "effective_month"} <= data.keys():
            try:
                model_allowance_check(
                    model=data["model"],
                    free_tokens_per_month=data["free_tokens_per_month"],
                    effective_month=data["effective_month"],
                )
            except BillingError as exc:
                raise forms.ValidationError(str(exc)) from exc
        return data

    def validate_unique(self) -> None:
        """The service replaces the month's row if there is one (setting it twice is not an error)."""


@admin.register(ModelAllowance)
class ModelAllowanceAdmin(admin.ModelAdmin):
    """Free allowances: set one from this month on; closed months stay as they were."""

    form = ModelAllowanceForm
    list_display = ("model", "free_tokens_per_month", "effective_month", "created_at")
    list_filter = ("model",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """A change is a new allowance from a month on (add one); rows of closed months must not move."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Statements of past months were computed with these rows."""
        return False

    def save_model(self, request: HttpRequest, obj: ModelAllowance, form: Any, change: bool) -> None:
        """Write through the service."""
        saved = model_allowance_set(
            model=obj.model,
            free_tokens_per_month=obj.free_tokens_per_month,
            effective_month=obj.effective_month,
        )
        obj.pk, obj.created_at = saved.pk, saved.created_at


@admin.register(ClusterLimit)
class ClusterLimitAdmin(admin.ModelAdmin):
    """Tokens-per-minute limits: add, change or delete (no row: no limit)."""

    list_display = ("cluster", "tokens_per_minute", "updated_at")
    fields = ("cluster", "tokens_per_minute")
    autocomplete_fields = ("cluster",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        """The cluster of an existing limit is fixed (it is the row's key)."""
        return ("cluster",) if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: ClusterLimit, form: Any, change: bool) -> None:
        """Write through the service."""
        saved = cluster_limit_set(cluster_id=obj.cluster_id, tokens_per_minute=obj.tokens_per_minute)
        assert saved is not None  # a positive limit was set
        obj.updated_at = saved.updated_at

    def delete_model(self, request: HttpRequest, obj: ClusterLimit) -> None:
        """Remove the limit through the service."""
        cluster_limit_set(cluster_id=obj.cluster_id, tokens_per_minute=None)


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    """The usage ledger: one row per request and model, as billed."""

    list_display = ("time", "cluster", "model", "tokens", "request_id", "price")
    list_filter = ("model",)
    search_fields = ("cluster__id", "cluster__name", "request_id")
    date_hierarchy = "time"
    list_select_related = ("cluster", "price")


@admin.register(UsageRollup)
class UsageRollupAdmin(ReadOnlyAdmin):
    """Hourly and daily sums of the ledger (`billing_rebuild_rollups --check` proves them)."""

    list_display = ("period_start", "granularity", "cluster", "model", "tokens", "records")
    list_filter = ("granularity", "model")
    search_fields = ("cluster__id", "cluster__name")
