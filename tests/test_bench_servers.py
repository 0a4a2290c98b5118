"""bench.servers: clients released together; bench_load's round figures count what failed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from bench.bench_load import Stream, round_figures
from bench.servers import released_together


@contextlib.contextmanager
def no_client() -> Iterator[None]:
    yield None


def test_a_request_that_fails_is_counted_not_lost() -> None:
    def request(_: None, index: int) -> int:
        if index % 3 == 0:
            raise ConnectionResetError(104, "Connection reset by peer")
        return index

    results, failures = released_together(7, no_client, request)
    assert sorted(results) == [1, 2, 4, 5]
    assert failures == ["ConnectionResetError: [Errno 104] Connection reset by peer"] * 3


def test_a_round_reports_its_failures_beside_the_served_requests() -> None:
    streams = [Stream(0.0, 0.1, 1.0, 10), Stream(0.0, 0.3, 2.0, 10)]
    figures = round_figures(streams, ["ReadError: reset", "ReadError: reset"])
    assert (figures["failed"], figures["failures"]) == (2, ["ReadError: reset"])
    assert figures["ttft_p50_ms"] == pytest.approx(200.0)
    assert figures["aggregate_tps"] == pytest.approx(10.0)


def test_a_round_where_every_request_failed_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="every request failed: ReadError"):
        round_figures([], ["ReadError: reset"])
