"""External providers through the data plane, against provider-shaped servers on 127.0.0.1.

Each test checks what reached the provider (the recorded calls: bodies, bearer keys, how many), what the
caller got back, what was written and what was billed.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from typing import Any

import pytest
from PIL import Image

from billing.models import UsageRecord
from console.clusters.services import CreatedCluster
from inference.usage import UsageEvent
from tests.conftest import BM25, MINILM
from tests.helpers import DataPlaneClient
from tests.providers.fake_providers import IMAGE_TOKENS, VALID_KEYS, FakeProviders, fake_vector, text_tokens

pytestmark = pytest.mark.django_db(transaction=True)

JINA = "jinaai/jina-clip-v2"
IMAGE_URL = "https://qdrant.tech/example.png"  # never fetched by us: Jina takes image URLs itself


def create(api: DataPlaneClient, name: str, body: dict[str, Any]) -> None:
    status, answer = api.call("put", f"/collections/{name}", body)
    assert status == 200, answer


def count(api: DataPlaneClient, collection: str) -> int:
    status, body = api.call("post", f"/collections/{collection}/points/count", {"exact": True})
    assert status == 200, body
    return int(body["result"]["count"])


def point_vectors(api: DataPlaneClient, collection: str, point_id: int) -> dict[str, Any]:
    status, body = api.call("get", f"/collections/{collection}/points/{point_id}")
    assert status == 200, body
    vector: dict[str, Any] = body["result"]["vector"]
    return vector


def jina_image(options: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"image": IMAGE_URL, "model": JINA, "options": {"dimensions": 512, **(options or {})}}


def png_base64(color: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def assert_close(a: list[float], b: list[float]) -> None:
    assert len(a) == len(b)
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-5


def test_header_key_reaches_only_its_provider_and_usage_is_reported(
    api: DataPlaneClient, fake: FakeProviders, usage_events: list[UsageEvent]
) -> None:
    create(
        api,
        "c",
        {"vectors": {"image": {"size": 512, "distance": "Cosine"}, "oa": {"size": 8, "distance": "Dot"}}},
    )
    body = {
        "points": [
            {
                "id": 1,
                "vector": {
                    "image": jina_image(),
                    "oa": {
                        "text": "red planet",
                        "model": "openai/text-embedding-3-small",
                        "options": {"dimensions": 8},
                    },
                },
            }
        ]
    }
    status, answer = api.call(
        "put",
        "/collections/c/points?wait=true",
        body,
        **{"jina-api-key": VALID_KEYS["jina"], "openai-api-key": VALID_KEYS["openai"]},
    )
    assert status == 200, answer
    assert answer["usage"]["inference"]["models"] == {
        JINA: {"tokens": IMAGE_TOKENS},
        "openai/text-embedding-3-small": {"tokens": 2},
    }
    (jina,) = fake.calls_to("jina")
    assert jina.headers["authorization"] == f"Bearer {VALID_KEYS['jina']}"
    assert jina.body == {
        "model": "jina-clip-v2",
        "input": [{"image": IMAGE_URL}],
        "task": "retrieval.passage",
        "dimensions": 512,
        "embedding_type": "float",
    }
    (openai,) = fake.calls_to("openai")
    assert openai.headers["authorization"] == f"Bearer {VALID_KEYS['openai']}"
    assert openai.body == {
        "model": "text-embedding-3-small",
        "input": ["red planet"],
        "dimensions": 8,
        "encoding_format": "float",
    }
    for call in fake.calls:  # no key travels in a body, and no provider sees another's key
        others = [k for name, k in VALID_KEYS.items() if name != call.provider]
        assert not any(k in json.dumps(call.body) + json.dumps(call.headers) for k in others)
        assert VALID_KEYS[call.provider] not in json.dumps(call.body)
    vectors = point_vectors(api, "c", 1)
    assert_close(vectors["image"], fake_vector("jina-clip-v2", "image:" + IMAGE_URL, 512))
    assert_close(vectors["oa"], fake_vector("text-embedding-3-small", "red planet", 8))
    assert {(e.model, e.tokens) for e in usage_events} == {
        (JINA, IMAGE_TOKENS),
        ("openai/text-embedding-3-small", 2),
    }
    # The ledger holds provider tokens under the provider model, priced at nothing (the provider bills).
    records = {r.model: r for r in UsageRecord.objects.all()}
    assert records[JINA].tokens == IMAGE_TOKENS and records[JINA].price is None


def test_option_key_wins_over_header_and_is_never_forwarded(
    api: DataPlaneClient, fake: FakeProviders
) -> None:
    create(api, "c", {"vectors": {"image": {"size": 512, "distance": "Cosine"}}})
    body = {"points": [{"id": 1, "vector": {"image": jina_image({"jina-api-key": VALID_KEYS["jina"]})}}]}
    status, answer = api.call("put", "/collections/c/points", body, **{"jina-api-key": "wrong"})
    assert status == 200, answer
    (call,) = fake.calls_to("jina")
    assert call.headers["authorization"] == f"Bearer {VALID_KEYS['jina']}"
    assert "jina-api-key" not in call.body


def test_identical_objects_reach_the_provider_once(
    api: DataPlaneClient, fake: FakeProviders, usage_events: list[UsageEvent]
) -> None:
    create(api, "c", {"vectors": {"image": {"size": 512, "distance": "Cosine"}}})
    other = {"image": "https://qdrant.tech/other.png", "model": JINA, "options": {"dimensions": 512}}
    points = [{"id": i, "vector": {"image": jina_image()}} for i in range(1, 6)] + [
        {"id": 6, "vector": {"image": other}}
    ]
    status, answer = api.call(
        "put", "/collections/c/points", {"points": points}, **{"jina-api-key": VALID_KEYS["jina"]}
    )
    assert status == 200, answer
    (call,) = fake.calls_to("jina")
    assert call.body["input"] == [{"image": IMAGE_URL}, {"image": "https://qdrant.tech/other.png"}]
    assert answer["usage"]["inference"]["models"] == {JINA: {"tokens": 2 * IMAGE_TOKENS}}
    assert count(api, "c") == 6
    assert point_vectors(api, "c", 1)["image"] == point_vectors(api, "c", 5)["image"]


def test_batches_follow_the_provider_limits(api: DataPlaneClient, fake: FakeProviders) -> None:
    create(api, "c", {"vectors": {"co": {"size": 16, "distance": "Cosine"}}})
    texts = [f"text number {i}" for i in range(100)]
    points: list[dict[str, Any]] = [
        {"id": i, "vector": {"co": {"text": t, "model": "cohere/embed-v4.0"}}} for i, t in enumerate(texts)
    ]
    images = [png_base64((255, 0, 0)), png_base64((0, 0, 255))]
    points += [
        {"id": 100 + i, "vector": {"co": {"image": img, "model": "cohere/embed-v4.0"}}}
        for i, img in enumerate(images)
    ]
    status, answer = api.call(
        "put", "/collections/c/points", {"points": points}, **{"cohere-api-key": VALID_KEYS["cohere"]}
    )
    assert status == 200, answer
    calls = fake.calls_to("cohere")
    text_calls = [c.body for c in calls if "texts" in c.body]
    image_calls = [c.body for c in calls if "images" in c.body]
    assert [len(b["texts"]) for b in text_calls] == [96, 4]  # Cohere takes at most 96 texts per call
    assert [len(b["images"]) for b in image_calls] == [1, 1]  # and one image
    assert all(b["input_type"] == "search_document" for b in text_calls)
    assert all(b["input_type"] == "image" for b in image_calls)
    assert image_calls[0]["images"][0] == "data:image/png;base64," + images[0]
    assert answer["usage"]["inference"]["models"] == {
        "cohere/embed-v4.0": {"tokens": sum(text_tokens(t) for t in texts) + 2 * IMAGE_TOKENS}
    }
    assert count(api, "c") == 102


def test_query_intent_maps_to_task_and_input_type(api: DataPlaneClient, fake: FakeProviders) -> None:
    create(
        api,
        "c",
        {"vectors": {"co": {"size": 16, "distance": "Cosine"}, "ji": {"size": 64, "distance": "Cosine"}}},
    )
    keys = {"cohere-api-key": VALID_KEYS["cohere"], "jina-api-key": VALID_KEYS["jina"]}
    for using, obj in (
        ("co", {"text": "planets", "model": "cohere/embed-v4.0"}),
        ("ji", {"text": "planets", "model": JINA, "options": {"dimensions": 64}}),
    ):
        status, answer = api.call(
            "post", "/collections/c/points/query", {"query": obj, "using": using}, **keys
        )
        assert status == 200, answer
    assert fake.calls_to("cohere")[0].body["input_type"] == "search_query"
    assert fake.calls_to("jina")[0].body["task"] == "retrieval.query"


def test_429_is_retried_then_succeeds(api: DataPlaneClient, fake: FakeProviders) -> None:
    create(api, "c", {"vectors": {"image": {"size": 512, "distance": "Cosine"}}})
    fake.fail("jina", 429, headers={"Retry-After": "0"})
    body = {"points": [{"id": 1, "vector": {"image": jina_image()}}]}
    status, answer = api.call("put", "/collections/c/points", body, **{"jina-api-key": VALID_KEYS["jina"]})
    assert status == 200, answer
    assert len(fake.calls_to("jina")) == 2
    assert count(api, "c") == 1


def test_persistent_500_is_a_clear_error_and_nothing_is_written(
    api: DataPlaneClient, fake: FakeProviders, usage_events: list[UsageEvent], settings: Any
) -> None:
    create(
        api,
        "c",
        {
            "vectors": {
                "image": {"size": 512, "distance": "Cosine"},
                "text": {"size": 384, "distance": "Cosine"},
            }
        },
    )
    fake.fail("jina", 500, times=10)
    body = {
        "points": [{"id": 1, "vector": {"image": jina_image(), "text": {"text": "Mars", "model": MINILM}}}]
    }
    status, answer = api.call("put", "/collections/c/points", body, **{"jina-api-key": VALID_KEYS["jina"]})
    assert status == 503, answer
    assert "Jina AI" in answer["status"]["error"] and "HTTP 500" in answer["status"]["error"]
    assert len(fake.calls_to("jina")) == settings.PROVIDER_ATTEMPTS
    assert count(api, "c") == 0
    assert usage_events == []  # the local model ran, but a failed request bills nothing


def test_provider_400_is_a_400_naming_the_provider(api: DataPlaneClient, fake: FakeProviders) -> None:
    create(api, "c", {"vectors": {"oa": {"size": 8, "distance": "Cosine"}}})
    obj = {"text": "x", "model": "openai/text-embedding-3-small", "options": {"dimensions": 8, "bogus": 1}}
    status, answer = api.call("put", "/collections/c/points", {"points": [{"id": 1, "vector": {"oa": obj}}]},
                              **{"openai-api-key": VALID_KEYS["openai"]})  # fmt: skip
    assert status == 400, answer
    assert "OpenAI" in answer["status"]["error"] and "HTTP 400" in answer["status"]["error"]
    assert "bogus" in answer["status"]["error"]  # the provider's own reason is passed on
    assert len(fake.calls_to("openai")) == 1  # a 400 is not retried
    assert count(api, "c") == 0


def test_missing_key_is_400_naming_the_header_before_anything_runs(
    api: DataPlaneClient, fake: FakeProviders, usage_events: list[UsageEvent]
) -> None:
    create(
        api,
        "c",
        {
            "vectors": {
                "image": {"size": 512, "distance": "Cosine"},
                "text": {"size": 384, "distance": "Cosine"},
            }
        },
    )
    body = {
        "points": [{"id": 1, "vector": {"image": jina_image(), "text": {"text": "Mars", "model": MINILM}}}]
    }
    status, answer = api.call(
        "put", "/collections/c/points", body, **{"openai-api-key": VALID_KEYS["openai"]}
    )
    assert status == 400, answer
    assert "`jina-api-key` header" in answer["status"]["error"]
    assert fake.calls == []
    assert count(api, "c") == 0
    assert usage_events == []


def test_key_is_absent_from_logs_and_responses(
    api: DataPlaneClient, fake: FakeProviders, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    create(api, "c", {"vectors": {"image": {"size": 512, "distance": "Cosine"}}})
    body = {"points": [{"id": 1, "vector": {"image": jina_image()}}]}
    wrong = "jina_wrong_secret_that_must_not_leak"
    status, refused = api.call("put", "/collections/c/points", body, **{"jina-api-key": wrong})
    assert status == 400, refused
    assert "Jina AI refused the API key (HTTP 401)" in refused["status"]["error"]
    assert fake.calls[-1].headers["authorization"] == f"Bearer {wrong}"  # it was sent, and echoed back
    fake.fail("jina", 502)
    status, accepted = api.call("put", "/collections/c/points", body, **{"jina-api-key": VALID_KEYS["jina"]})
    assert status == 200, accepted
    everything = json.dumps([refused, accepted]) + caplog.text
    assert caplog.text  # something was logged (the HTTP client logs each request)
    for key in (wrong, VALID_KEYS["jina"]):
        assert key not in everything


def test_dimension_mismatch_is_400_and_nothing_is_written(
    api: DataPlaneClient, fake: FakeProviders, usage_events: list[UsageEvent]
) -> None:
    create(api, "c", {"vectors": {"image": {"size": 256, "distance": "Cosine"}}})
    body = {"points": [{"id": 1, "vector": {"image": jina_image()}}]}  # asks for 512 dimensions
    status, answer = api.call("put", "/collections/c/points", body, **{"jina-api-key": VALID_KEYS["jina"]})
    assert status == 400, answer
    assert "expected dim: 256, got 512" in answer["status"]["error"]
    assert count(api, "c") == 0
    assert usage_events == []


def test_provider_tokens_are_not_limited_by_the_cluster_limit(
    api: DataPlaneClient, cluster: CreatedCluster, fake: FakeProviders
) -> None:
    from billing.services import cluster_limit_set

    create(
        api,
        "c",
        {
            "vectors": {
                "image": {"size": 512, "distance": "Cosine"},
                "text": {"size": 384, "distance": "Cosine"},
            }
        },
    )
    cluster_limit_set(cluster_id=cluster.cluster.id, tokens_per_minute=10)
    keys = {"jina-api-key": VALID_KEYS["jina"]}
    for i in range(3):  # 1000 provider tokens each, far over 10: the provider bills them, not us
        body = {"points": [{"id": i, "vector": {"image": {**jina_image(), "image": f"{IMAGE_URL}?{i}"}}}]}
        status, answer = api.call("put", "/collections/c/points", body, **keys)
        assert status == 200, answer
    status, answer = api.call(
        "put",
        "/collections/c/points",
        {"points": [{"id": 9, "vector": {"text": {"text": "Mars", "model": MINILM}}}]},
    )
    assert status == 200, answer  # local tokens so far: none, so the local model may still run


def test_bm25_and_local_models_still_work_without_any_key(api: DataPlaneClient, fake: FakeProviders) -> None:
    create(
        api,
        "c",
        {
            "vectors": {"text": {"size": 384, "distance": "Cosine"}},
            "sparse_vectors": {"bm25": {"modifier": "idf"}},
        },
    )
    body = {
        "points": [
            {
                "id": 1,
                "vector": {
                    "text": {"text": "Mars", "model": MINILM},
                    "bm25": {"text": "Mars", "model": BM25},
                },
            }
        ]
    }
    status, answer = api.call("put", "/collections/c/points", body)
    assert status == 200, answer
    assert fake.calls == []
