"""Output serializers for the catalog API."""

from __future__ import annotations

from rest_framework import serializers


class CatalogModelSerializer(serializers.Serializer):
    """One model of the catalog, with its price per 1M tokens and whether it is installed here."""

    name = serializers.CharField(source="entry.name")
    modality = serializers.CharField(source="entry.modality")
    output = serializers.CharField(source="entry.spec.output")
    input_type = serializers.CharField(source="entry.spec.input_type")
    dimensions = serializers.IntegerField(source="entry.spec.dim", allow_null=True)
    context_window = serializers.IntegerField(source="entry.spec.context_window", allow_null=True)
    price_per_million_tokens = serializers.DecimalField(
        source="price_per_million", max_digits=12, decimal_places=6, coerce_to_string=True
    )
    installed = serializers.BooleanField()
    description = serializers.CharField(source="entry.description")
    weights_note = serializers.CharField(source="entry.weights_note")


class InferenceInputSerializer(serializers.Serializer):
    """One input of Qdrant's inference-service request: `{data, data_type, model, options}`."""

    def get_fields(self) -> dict[str, serializers.Field]:
        """Declared here because a field named `data` would shadow `Serializer.data` as a class attribute."""
        return {
            "data": serializers.JSONField(),
            "data_type": serializers.ChoiceField(choices=["text", "image", "object"]),
            "model": serializers.CharField(),
            "options": serializers.DictField(required=False, allow_null=True),
        }


class InferenceRequestSerializer(serializers.Serializer):
    """What a Qdrant server sends to its configured inference address."""

    inputs = InferenceInputSerializer(many=True)
    inference = serializers.ChoiceField(choices=["update", "search"], required=False, allow_null=True)
    token = serializers.CharField(required=False, allow_null=True, allow_blank=True)


class InferenceResponseSerializer(serializers.Serializer):
    """Embeddings by position (dense list, sparse {indices, values} or multivector) and usage per model."""

    embeddings = serializers.ListField(child=serializers.JSONField())
    usage = serializers.DictField()


class ProviderSerializer(serializers.Serializer):
    """An external provider: the model-name prefix, where the caller's key goes, what it embeds."""

    prefix = serializers.CharField()
    name = serializers.CharField()
    key_header = serializers.CharField()
    input_types = serializers.ListField(child=serializers.CharField())
    example_model = serializers.CharField()
    docs_url = serializers.CharField()
    billing = serializers.SerializerMethodField()

    def get_billing(self, obj: object) -> str:
        """How provider usage is billed here."""
        return "tokens reported by the provider, recorded at price 0: the provider bills your account"
