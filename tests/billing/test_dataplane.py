"""Billing through the real data plane and model: retries, failures, and token counts the model processed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from billing.models import UsageRecord, UsageRollup
from billing.selectors import rollup_comparison
from console.clusters.services import CreatedCluster
from inference.engine.bm25 import count_words
from tests.billing.conftest import DataPlane, new_cluster, response_usage
from tests.conftest import BM25, MINILM

MINILM_CONTEXT = 256

TEXTS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
    "Crème brûlée, naïve café — déjà vu! 東京タワー and emoji 🚀🚀",
    "short",
    " ".join(f"word{i} and some filler text" for i in range(200)),  # far over the 256-token window
]


@pytest.fixture
def plane(db: None, models_dir: Path) -> DataPlane:
    """A cluster's data plane with a dense + BM25 collection `c` and a 3-dimensional collection `small`."""
    plane = DataPlane(new_cluster())
    status, body = plane.call(
        "put",
        "/collections/c",
        {
            "vectors": {"dense": {"size": 384, "distance": "Cosine"}},
            "sparse_vectors": {"bm25": {"modifier": "idf"}},
        },
    )
    assert status == 200, body
    status, body = plane.call("put", "/collections/small", {"vectors": {"size": 3, "distance": "Cosine"}})
    assert status == 200, body
    return plane


def upsert_body(texts: list[str], first_id: int = 1) -> dict[str, Any]:
    return {
        "points": [
            {
                "id": first_id + i,
                "vector": {"dense": {"text": t, "model": MINILM}, "bm25": {"text": t, "model": BM25}},
            }
            for i, t in enumerate(texts)
        ]
    }


def ledger(request_id: str | None = None) -> dict[str, int]:
    rows = (
        UsageRecord.objects.all() if request_id is None else UsageRecord.objects.filter(request_id=request_id)
    )
    totals: dict[str, int] = {}
    for model, tokens in rows.values_list("model", "tokens"):
        totals[model] = totals.get(model, 0) + tokens
    return totals


def test_a_retry_with_the_same_idempotency_key_is_billed_once(plane: DataPlane) -> None:
    body = upsert_body(TEXTS[:2])
    status, first = plane.call(
        "put", "/collections/c/points?wait=true", body, **{"Idempotency-Key": "order-17"}
    )
    assert status == 200, first
    status, retry = plane.call(
        "put", "/collections/c/points?wait=true", body, **{"Idempotency-Key": "order-17"}
    )
    assert status == 200, retry
    assert response_usage(first) == response_usage(retry) != {}
    assert ledger("order-17") == response_usage(first)
    assert UsageRecord.objects.count() == 2  # one per model

    status, other = plane.call(
        "put", "/collections/c/points?wait=true", body, **{"Idempotency-Key": "order-18"}
    )
    assert status == 200, other
    assert ledger() == {m: 2 * t for m, t in response_usage(first).items()}
    assert rollup_comparison().equal


def test_requests_without_a_key_are_each_billed(plane: DataPlane) -> None:
    query = {"query": {"text": TEXTS[0], "model": MINILM}, "using": "dense"}
    usages = [response_usage(plane.call("post", "/collections/c/points/query", query)[1]) for _ in range(3)]
    assert usages[0] == {MINILM: usages[0][MINILM]} and usages[0][MINILM] > 0
    assert ledger() == {MINILM: 3 * usages[0][MINILM]}
    assert UsageRecord.objects.values("request_id").distinct().count() == 3


@pytest.mark.parametrize(
    ("collection", "body", "status_code"),
    [
        pytest.param(
            "small",
            {"points": [{"id": 1, "vector": [1, 0, 0]}, {"id": 2, "vector": {"text": "x", "model": MINILM}}]},
            400,
            id="dimension-mismatch",
        ),
        pytest.param(
            "c",
            {
                "points": [
                    {
                        "id": 1,
                        "vector": {"dense": {"text": "x", "model": "mixedbread-ai/mxbai-embed-large-v1"}},
                    }
                ]
            },
            400,
            id="model-not-installed",
        ),
        pytest.param(
            "c",
            {"points": [{"id": 1, "vector": {"nope": {"text": "x", "model": MINILM}}}]},
            400,
            id="unknown-vector-name",
        ),
    ],
)
def test_failed_requests_bill_nothing(
    plane: DataPlane, collection: str, body: dict[str, Any], status_code: int
) -> None:
    status, answer = plane.call(
        "put", f"/collections/{collection}/points?wait=true", body, **{"Idempotency-Key": "k"}
    )
    assert status == status_code, answer
    assert "usage" not in answer
    assert not UsageRecord.objects.exists()
    # Usage is recorded as soon as the model ran and refunded when the request then fails: a roll-up row
    # may stay behind at zero, which says the same as no row.
    assert not UsageRollup.objects.exclude(tokens=0, records=0).exists()


def test_inference_disabled_bills_nothing(db: None, models_dir: Path) -> None:
    created: CreatedCluster = new_cluster()
    created.cluster.inference_enabled = False
    created.cluster.save(update_fields=["inference_enabled"])
    plane = DataPlane(created)
    plane.call("put", "/collections/c", {"vectors": {"dense": {"size": 384, "distance": "Cosine"}}})
    status, _ = plane.call("put", "/collections/c/points", upsert_body(TEXTS[:1]))
    assert status == 400
    assert not UsageRecord.objects.exists()


def test_recorded_tokens_are_what_the_model_processed(plane: DataPlane, minilm_dir: Path) -> None:
    tokenizer = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    counts = [len(tokenizer.encode(text, add_special_tokens=True).ids) for text in TEXTS]
    assert counts[3] > MINILM_CONTEXT and counts[2] == 3  # [CLS] short [SEP]
    processed = sum(min(c, MINILM_CONTEXT) for c in counts)  # the model truncates to its window

    # Every text twice in one request: identical inputs are computed once and billed once.
    status, body = plane.call("put", "/collections/c/points?wait=true", upsert_body(TEXTS + TEXTS))
    assert status == 200, body
    assert ledger() == response_usage(body) == {MINILM: processed, BM25: sum(count_words(t) for t in TEXTS)}

    # A query bills its own tokens, under its own request id.
    status, body = plane.call(
        "post",
        "/collections/c/points/query",
        {"query": {"text": TEXTS[1], "model": MINILM}, "using": "dense"},
    )
    assert status == 200, body
    (query_record,) = UsageRecord.objects.exclude(
        request_id__in=UsageRecord.objects.filter(model=BM25).values("request_id")
    )
    assert query_record.tokens == counts[1] == response_usage(body)[MINILM]
