"""Image fetches cannot starve the server: a bounded gate, one deadline per request, refusals at once.

Pure pytest, no Django: `pytest -p no:django tests/engine/test_fetch_gate.py`.
"""

from __future__ import annotations

import threading
import time

import pytest

from inference.engine.fetch import FetchesBusy, FetchGate, FetchPolicy, fetch_url
from inference.engine.types import ImageFetchError


def policy(host: str, total: float = 1.5) -> FetchPolicy:
    return FetchPolicy(allow_hosts=frozenset({host}), read_timeout=5.0, total_timeout=total)


def test_a_dripping_server_is_cut_at_the_total_deadline(drip: str) -> None:
    started = time.monotonic()
    with pytest.raises(ImageFetchError):
        fetch_url(f"http://{drip}/cat.png", policy(drip))
    assert time.monotonic() - started < 1.5 + 1.0  # not the 5 s read timeout times the bytes


def test_a_full_gate_refuses_at_once_and_frees_its_slots(drip: str) -> None:
    gate = FetchGate(requests=2)
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            gate.fetch_all([f"http://{drip}/a.png", f"http://{drip}/b.png"], policy(drip))
        except BaseException as exc:
            errors.append(exc)

    holders = [threading.Thread(target=slow) for _ in range(2)]
    for thread in holders:
        thread.start()
    time.sleep(0.3)  # both slots taken
    started = time.monotonic()
    with pytest.raises(FetchesBusy) as busy:
        gate.fetch_all([f"http://{drip}/c.png"], policy(drip))
    assert time.monotonic() - started < 0.1
    assert busy.value.status_code == 503 and busy.value.retry_after > 0
    for thread in holders:
        thread.join(5)
    # Both slow requests ended by their one deadline (all their images together), with a clear error.
    assert len(errors) == 2 and all(isinstance(e, ImageFetchError) for e in errors)
    with pytest.raises(ImageFetchError):  # the slots are free again: this one runs (and times out)
        gate.fetch_all([f"http://{drip}/d.png"], policy(drip, total=0.5))


def test_a_refused_address_is_named_by_the_host_the_caller_gave() -> None:
    with pytest.raises(ImageFetchError) as refused:
        fetch_url("http://localhost:9/cat.png", FetchPolicy())
    message = str(refused.value)
    assert "'localhost'" in message and "loopback" in message
    assert "127.0.0.1" not in message and "::1" not in message
