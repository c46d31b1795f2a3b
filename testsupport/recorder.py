"""A watcher's change callback that records what it was handed."""

from __future__ import annotations

from envwrap.environment import Composed
from envwrap.refs import Locator


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], set[Locator]]] = []

    def __call__(self, composed: Composed, changed: set[Locator]) -> None:
        self.calls.append((composed.environment, changed))
