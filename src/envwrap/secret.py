"""Holders that keep secret values out of reprs, tracebacks and logs.

A :class:`Secret` is revealed only where a value must leave envwrap: the
child's environment, ``--render`` files, ``--mask`` and ``export``.
Every revealed value is also registered with :data:`known_values`, which the
log and error paths use to redact anything that slipped into a message.
"""

from __future__ import annotations

import _thread  # not `threading`: it costs a quarter of a no-reference start-up

__all__ = ["REDACTED", "Secret", "known_values", "redact"]

REDACTED = "*****"
#: values shorter than this are not redacted from free text: masking "a" or "1"
#: would destroy every message without protecting anything worth protecting.
MIN_REDACT_LENGTH = 4


class _KnownValues:
    """The set of secret values this process has seen, longest first."""

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._values: set[str] = set()
        self._ordered: tuple[str, ...] = ()

    def add(self, value: str) -> None:
        if len(value) < MIN_REDACT_LENGTH or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            self._ordered = tuple(sorted(self._values, key=len, reverse=True))

    def ordered(self) -> tuple[str, ...]:
        return self._ordered

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._ordered = ()


known_values = _KnownValues()


def redact(text: str) -> str:
    """Replace every known secret value in ``text`` (longest first)."""
    for value in known_values.ordered():
        if value in text:
            text = text.replace(value, REDACTED)
    return text


class Secret:
    """A secret string whose ``repr`` and ``str`` never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        known_values.add(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")
