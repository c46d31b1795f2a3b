"""Overwrite, in this process's own memory, values it must not keep.

A process forked from envwrap (the guardian) starts as a copy of envwrap's
memory: the environment block the kernel shows as ``/proc/PID/environ`` (with
``VAULT_TOKEN`` and the other credentials envwrap was started with) and every
copy of those values on the Python heap. The guardian needs none of them, so
it overwrites them with zero bytes right after the fork (docs/SECURITY.md):

- the whole environment block, whose bounds are fields 50 and 51 of
  ``/proc/self/stat`` (proc(5));
- every occurrence of each given value in the process's writable private
  memory (heap, stack, anonymous mappings), found through
  ``/proc/self/maps`` and rewritten through ``/proc/self/mem``, which a
  process may always write for itself.

Writes go to this process's copy-on-write pages only; envwrap's stay as they
are. Values shorter than :data:`SHORTEST` are skipped: a short value could
match bytes that the process still needs. Best effort: where ``/proc`` is not
there (macOS) nothing is done, and the non-dumpable flag (``prctl``) is what
keeps other processes out.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["SHORTEST", "forget"]

#: values shorter than this are not searched for
SHORTEST = 8
_CHUNK = 1 << 18


def forget(values: Iterable[bytes]) -> int:
    """Zero the environment block and every copy of ``values``; the number of copies.

    Each value is searched for as two halves that never sit side by side in
    this function's own objects (nor in its read buffer, zeroed at the end), so
    the search finds only the copies to erase, never its own needle.
    """
    halves = sorted({(value[:len(value) // 2], value[len(value) // 2:])
                     for value in values if len(value) >= SHORTEST},
                    key=lambda pair: len(pair[0]) + len(pair[1]))
    try:
        mem = os.open("/proc/self/mem", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return 0
    buffer = bytearray(_CHUNK + (sum(map(len, halves[-1])) if halves else 0))
    try:
        environment = _environment_block()
        if environment is not None:
            start, end = environment
            _zero(mem, start, end - start)
        if not halves:
            return 0
        return sum(_forget_in(mem, start, end, halves, buffer) for start, end in _writable())
    finally:
        buffer[:] = bytes(len(buffer))
        os.close(mem)


def _environment_block() -> tuple[int, int] | None:
    try:
        with open("/proc/self/stat", "rb") as handle:
            text = handle.read()
        fields = text[text.rfind(b")") + 2:].split()
        # fields[0] is field 3 (state): env_start and env_end are fields 50 and 51
        start, end = int(fields[47]), int(fields[48])
    except (OSError, IndexError, ValueError):
        return None
    return (start, end) if 0 < start < end else None


def _writable() -> list[tuple[int, int]]:
    """The private writable mappings that are not files: heap, stack, anonymous."""
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 5 or not fields[1].startswith("rw") or fields[1][3] != "p":
            continue
        name = fields[5].strip() if len(fields) > 5 else ""
        if name and name not in ("[heap]", "[stack]"):
            continue  # a file's data, or [vvar]/[vsyscall]
        low, _, high = fields[0].partition("-")
        found.append((int(low, 16), int(high, 16)))
    return found


def _forget_in(mem: int, start: int, end: int, halves: list[tuple[bytes, bytes]],
               buffer: bytearray) -> int:
    """Zero each value found between ``start`` and ``end``. Chunks overlap by
    the longest value; a copy is handled in the chunk where it starts."""
    found = 0
    offset = start
    view = memoryview(buffer)
    while offset < end:
        size = min(len(buffer), end - offset)
        try:
            got = os.preadv(mem, [view[:size]], offset)
        except OSError:
            got = 0
        for head, tail in halves:
            at = buffer.find(head, 0, got)
            while 0 <= at < _CHUNK:
                after = at + len(head)
                if buffer[after:after + len(tail)] == tail:
                    _zero(mem, offset + at, len(head) + len(tail))
                    found += 1
                at = buffer.find(head, at + 1, got)
        offset += _CHUNK
    view.release()
    return found


def _zero(mem: int, address: int, size: int) -> None:
    try:  # noqa: SIM105 -- contextlib would cost start-up time
        os.pwrite(mem, bytes(size), address)
    except OSError:
        pass
