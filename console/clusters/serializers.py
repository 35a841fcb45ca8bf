"""Input and output serializers of the console API (cluster inference toggle, restart jobs)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from console.clusters.models import RestartJob


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean only: `"yes"`, `1` or `"false"` are refused rather than guessed at."""

    def to_internal_value(self, data: Any) -> bool:
        """Accept `true` / `false`."""
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class InferenceToggleInputSerializer(serializers.Serializer):
    """`PATCH /api/v1/clusters/<id>/inference` body: `{"enabled": bool}`."""

    enabled = StrictBooleanField(required=True)


class EligibilitySerializer(serializers.Serializer):
    """Whether inference may be enabled, and if not, why (the console shows the reason by the toggle)."""

    eligible = serializers.BooleanField()
    reason = serializers.CharField()


class RestartJobSerializer(serializers.ModelSerializer):
    """A restart job as the console shows it: state, step, progress, error and timestamps, and what each web
    process (replica) answered: `replicas` maps a replica id ("control-url" without a registry) to its host,
    pid, latest step with `ok` / `gone` / `detail` or `error` / `at`, and every step's result in `steps`."""

    cluster_id = serializers.CharField()
    requested_by = serializers.SerializerMethodField()
    replicas = serializers.JSONField(read_only=True)

    class Meta:
        model = RestartJob
        fields = (
            "id",
            "cluster_id",
            "target_enabled",
            "previous_enabled",
            "state",
            "step",
            "progress",
            "error",
            "attempts",
            "requested_by",
            "retry_of",
            "chained_from",
            "created_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
            "replicas",
        )
        read_only_fields = fields

    def get_requested_by(self, job: RestartJob) -> str | None:
        """The username of whoever asked for it (None for a deleted user)."""
        return job.requested_by.get_username() if job.requested_by else None


class InferenceStateSerializer(serializers.Serializer):
    """A cluster's inference toggle: effective and desired state, eligibility and the current job."""

    cluster_id = serializers.CharField(source="cluster.pk")
    enabled = serializers.BooleanField()  # effective: what data-plane requests see
    desired = serializers.BooleanField()  # what the last toggle asked for
    status = serializers.CharField(source="cluster.status")  # running | restarting
    eligibility = EligibilitySerializer()
    job = RestartJobSerializer(allow_null=True)  # the active job, else the latest one
