"""Forms of the web console (every one is posted with Django's CSRF token)."""

from __future__ import annotations

from django import forms


class ApiKeyCreateForm(forms.Form):
    """A new data-plane API key: a name to recognise it by, and whether it may only read."""

    name = forms.CharField(max_length=100, initial="default", strip=True)
    read_only = forms.BooleanField(required=False, help_text="Read-only keys cannot write or create.")


class InferenceToggleForm(forms.Form):
    """Turn inference on or off. `confirm` says the admin accepted that the cluster restarts.

    Without it (no JavaScript to show the dialog) the view answers with a confirmation page instead of
    toggling, so a restart never starts from a single unconfirmed click.
    """

    enabled = forms.TypedChoiceField(
        choices=[("true", "on"), ("false", "off")], coerce=lambda value: value == "true"
    )
    confirm = forms.BooleanField(required=False)
