"""Fixtures shared by the handoff tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testsupport.handoff import Run


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    """The runs a test started: every process of each is killed at teardown."""
    started: list[Run] = []
    yield started
    for run in started:
        run.kill_everything()
