"""Models hosted elsewhere (OpenAI, Cohere, Jina AI, OpenRouter) behind the same inference objects.

A model named with a provider prefix (`openai/`, `cohere/`, `jinaai/`, `openrouter/`) is embedded by that
provider's API with the caller's own key, sent with the request (header `<provider>-api-key`, or the same
name in the object's `options`) and never stored. :func:`embed_split` is the `embed` of a request that may
mix them with local models: local ones go to the engine, the rest to their providers, and the results come
back in order, with usage per model.

Pure Python (httpx): no Django and no app imports. The gateway wires it up with settings.
"""

from inference.providers.base import ProviderClient, ProviderConfig
from inference.providers.clients import PROVIDERS
from inference.providers.router import KEY_HEADERS, embed_split, is_provider_model, provider_of

__all__ = [
    "KEY_HEADERS",
    "PROVIDERS",
    "ProviderClient",
    "ProviderConfig",
    "embed_split",
    "is_provider_model",
    "provider_of",
]
