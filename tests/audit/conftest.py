"""Fixtures for the audit log: turns, records and logs on a temporary file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_helpers import MakeRecord, MakeTurn, build_record, build_turn, varied_records

from mlxnb._audit import AuditLog, TurnRecord


@pytest.fixture
def make_turn() -> MakeTurn:
    return build_turn


@pytest.fixture
def make_record() -> MakeRecord:
    return build_record


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.sqlite3"


@pytest.fixture
def log(db_path: Path) -> Iterator[AuditLog]:
    with AuditLog(db_path) as opened:
        yield opened


@pytest.fixture(params=["file", "memory"])
def any_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditLog]:
    """The same behaviour is expected from a file-backed and an in-memory log."""
    path = tmp_path / "audit.sqlite3" if request.param == "file" else ":memory:"
    with AuditLog(path) as opened:
        yield opened


@pytest.fixture
def records() -> list[TurnRecord]:
    return varied_records()


@pytest.fixture
def filled(log: AuditLog, records: list[TurnRecord]) -> AuditLog:
    for record in records:
        log.append(record)
    return log
