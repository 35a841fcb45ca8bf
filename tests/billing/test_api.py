"""The billing API: usage series, statements (JSON and CSV), validation and permissions."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from billing.models import LIST_PRICE_EPOCH
from console.clusters.models import Cluster, Membership
from tests.billing.conftest import MXBAI, console_user, record, set_price_history
from tests.conftest import BM25, MINILM

DAY = datetime(2025, 3, 10, tzinfo=UTC)


@pytest.fixture
def viewer(db: None) -> Client:
    client = Client()
    client.force_login(console_user("viewer", Membership.Role.VIEWER))
    return client


@pytest.fixture
def usage(cluster: Cluster) -> Cluster:
    """Usage on March 10th 2025 at 09:15, 09:45 and 11:00 UTC, on April 2nd, and on another cluster."""
    record(cluster.id, MINILM, 100, DAY + timedelta(hours=9, minutes=15))
    record(cluster.id, MINILM, 50, DAY + timedelta(hours=9, minutes=45))
    record(cluster.id, BM25, 7, DAY + timedelta(hours=11))
    record(cluster.id, MINILM, 1000, datetime(2025, 4, 2, 8, tzinfo=UTC))
    return cluster


def get(client: Client, url: str, **params: str) -> tuple[int, Any]:
    response = client.get(url, params)
    return response.status_code, response.json()


def points(body: dict[str, Any], model: str) -> list[tuple[str, int, int]]:
    (series,) = [s for s in body["series"] if s["model"] == model]
    return [(p["start"], p["tokens"], p["requests"]) for p in series["points"]]


def test_hourly_series_has_every_bucket_including_zeros(viewer: Client, usage: Cluster) -> None:
    status, body = get(
        viewer,
        f"/api/v1/clusters/{usage.id}/usage",
        **{"from": "2025-03-10T09:30:00Z", "to": "2025-03-10T12:00:00Z", "granularity": "hour"},
    )
    assert status == 200, body
    assert (body["granularity"], body["start"], body["end"]) == (
        "hour",
        "2025-03-10T09:00:00Z",
        "2025-03-10T12:00:00Z",
    )
    assert points(body, MINILM) == [
        ("2025-03-10T09:00:00Z", 150, 2),
        ("2025-03-10T10:00:00Z", 0, 0),
        ("2025-03-10T11:00:00Z", 0, 0),
    ]
    assert points(body, BM25)[2] == ("2025-03-10T11:00:00Z", 7, 1)
    assert (body["tokens"], body["requests"]) == (157, 3)


def test_daily_and_monthly_series_and_the_model_filter(viewer: Client, usage: Cluster) -> None:
    url = f"/api/v1/clusters/{usage.id}/usage"
    status, body = get(viewer, url, **{"from": "2025-03-09", "to": "2025-03-11", "granularity": "day"})
    assert status == 200, body
    assert points(body, MINILM) == [("2025-03-09T00:00:00Z", 0, 0), ("2025-03-10T00:00:00Z", 150, 2)]
    status, body = get(viewer, url, **{"from": "2025-02-15", "to": "2025-05-01", "granularity": "month"})
    assert status == 200, body
    assert points(body, MINILM) == [
        ("2025-02-01T00:00:00Z", 0, 0),
        ("2025-03-01T00:00:00Z", 150, 2),
        ("2025-04-01T00:00:00Z", 1000, 1),
    ]
    status, body = get(
        viewer,
        url,
        **{"from": "2025-03-01", "to": "2025-05-01", "granularity": "month", "model": "QDRANT/BM25"},
    )
    assert status == 200, body
    assert body["model"] == BM25
    assert [s["model"] for s in body["series"]] == [BM25]
    assert body["tokens"] == 7


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ({"granularity": "week"}, "granularity", "not a valid choice"),
        ({"from": "yesterday"}, "from", "wrong format"),
        ({"from": "2025-03-02", "to": "2025-03-01"}, "from", "must be before"),
        ({"model": "no/such-model"}, "model", "Unknown model"),
        ({"from": "2000-01-01", "to": "2025-01-01", "granularity": "hour"}, "granularity", "More than 5000"),
    ],
)
def test_bad_series_parameters_are_400(
    viewer: Client, cluster: Cluster, params: dict[str, str], field: str, fragment: str
) -> None:
    status, body = get(viewer, f"/api/v1/clusters/{cluster.id}/usage", **params)
    assert status == 400
    assert fragment in str(body[field])


def test_statement_json(viewer: Client, cluster: Cluster) -> None:
    set_price_history(MXBAI, [(LIST_PRICE_EPOCH, "0.10"), (datetime(2025, 3, 15, tzinfo=UTC), "0.20")])
    record(cluster.id, MXBAI, 4_000_000, datetime(2025, 3, 1, tzinfo=UTC))
    record(cluster.id, MXBAI, 3_000_000, datetime(2025, 3, 20, tzinfo=UTC))
    record(cluster.id, MINILM, 123, datetime(2025, 3, 20, tzinfo=UTC))
    record(cluster.id, MINILM, 99, datetime(2025, 4, 1, tzinfo=UTC))  # April: not on March's statement
    status, body = get(viewer, f"/api/v1/clusters/{cluster.id}/statements/2025-03")
    assert status == 200, body
    assert {k: body[k] for k in ("cluster", "month", "period_start", "period_end", "currency", "cost")} == {
        "cluster": cluster.id,
        "month": "2025-03",
        "period_start": "2025-03-01T00:00:00Z",
        "period_end": "2025-04-01T00:00:00Z",
        "currency": "USD",
        "cost": "0.40",
    }
    assert "half-up" in body["rounding"]
    assert [
        (ln["model"], ln["used_tokens"], ln["free_tokens"], ln["billable_tokens"], ln["cost"])
        for ln in body["lines"]
    ] == [
        (MXBAI, 7_000_000, 5_000_000, 2_000_000, "0.40"),
        (MINILM, 123, 123, 0, "0.00"),
    ]
    assert body["lines"][0]["prices"][1] == {
        "price_per_million": "0.200000",
        "effective_from": "2025-03-15T00:00:00Z",
        "used_tokens": 3_000_000,
        "free_tokens": 1_000_000,
        "billable_tokens": 2_000_000,
        "amount": "0.4",
    }
    assert (body["used_tokens"], body["requests"]) == (7_000_123, 3)
    assert Decimal(body["cost"]) == sum(Decimal(ln["cost"]) for ln in body["lines"])


def test_statement_csv(viewer: Client, cluster: Cluster) -> None:
    set_price_history(MXBAI, [(LIST_PRICE_EPOCH, "0.10")])
    record(cluster.id, MXBAI, 5_123_456, datetime(2025, 3, 1, tzinfo=UTC))
    response = viewer.get(f"/api/v1/clusters/{cluster.id}/statements/2025-03.csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert f'filename="statement-{cluster.id}-2025-03.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [
        (r["model"], r["used_tokens"], r["free_tokens"], r["billable_tokens"], r["cost"]) for r in rows
    ] == [
        (MXBAI, "5123456", "5000000", "123456", "0.01"),  # 0.0123456 -> 0.01
        ("total", "5123456", "5000000", "123456", "0.01"),
    ]


@pytest.mark.parametrize("month", ["2025-13", "2025-3", "march", "1969-12"])
def test_bad_statement_months_are_400(viewer: Client, cluster: Cluster, month: str) -> None:
    for suffix in ("", ".csv"):
        response = viewer.get(f"/api/v1/clusters/{cluster.id}/statements/{month}{suffix}")
        assert response.status_code == 400
        assert "month" in response.json()


def test_unknown_cluster_is_404(viewer: Client) -> None:
    for url in ("/api/v1/clusters/nope/usage", "/api/v1/clusters/nope/statements/2025-03"):
        response = viewer.get(url)
        assert response.status_code == 404
        assert "does not exist" in response.json()["detail"]


def test_only_users_with_a_console_role_may_read(cluster: Cluster) -> None:
    urls = [
        f"/api/v1/clusters/{cluster.id}/usage",
        f"/api/v1/clusters/{cluster.id}/statements/2025-03",
        f"/api/v1/clusters/{cluster.id}/statements/2025-03.csv",
    ]
    anonymous = Client()
    no_role = Client()
    no_role.force_login(console_user("nobody"))
    admin = Client()
    admin.force_login(console_user("boss", staff=True))
    token = Client(
        headers={"Authorization": f"Token {Token.objects.create(user=console_user('bot', 'viewer')).key}"}
    )
    for url in urls:
        assert anonymous.get(url).status_code in (401, 403)
        assert "credentials were not provided" in anonymous.get(url).json()["detail"]
        assert no_role.get(url).status_code == 403
        assert "no console role" in no_role.get(url).json()["detail"]
        assert admin.get(url).status_code == 200
        assert token.get(url).status_code == 200
