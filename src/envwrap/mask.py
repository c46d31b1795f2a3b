"""``--mask``: relay a child's stdout and stderr with every secret value replaced.

This module knows about bytes and file descriptors only: no stores, no child
process. The supervisor hands it the resolved values (the inline-reference
results included) and wires the two pipe ends into the child it spawns.

What is masked
    Every occurrence of every value is hidden; each maximal run of hidden bytes
    (occurrences that overlap are one run) becomes one :data:`~envwrap.secret.REDACTED`.
    Two values that merely touch (``AAAABBBB``) give two markers. Values are
    matched as bytes: UTF-8 with ``surrogateescape``, the encoding the child's
    environment was built with. Values shorter than
    :data:`~envwrap.secret.MIN_REDACT_LENGTH` characters are left alone: masking
    ``"1"`` or ``"dev"`` would destroy the output without protecting anything.

Streaming
    A value may be split across reads. :meth:`Masker.feed` emits everything whose
    fate is already known and holds back only the tail of the stream that is the
    *beginning* of some value (so at most ``longest - 1`` bytes). A tail that is
    not a value prefix (``"...done\\n"``) is never held, so output is not delayed
    by masking; a tail that *is* a value prefix waits for the next write or for
    EOF, because emitting it early would leak the value once the rest arrives.
    The output of any chunking is byte-for-byte the output of masking the whole
    stream at once.

Known limits
    - Masking needs the value verbatim: an encoded, escaped or re-wrapped value
      (base64, JSON-escaped, a line-wrapped PEM) is not recognised.
    - The child writes into pipes, so it sees no TTY on stdout/stderr (no colours,
      block buffering in many runtimes), and the relative order of its stdout and
      stderr lines is not kept across the two streams.
    - Scanning cost grows with the number of distinct values (one fast substring
      search per value per read): about 1 GB/s / values on a modern core.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import select
import threading
import time
from collections.abc import Iterable

from envwrap.secret import MIN_REDACT_LENGTH, REDACTED

__all__ = ["CHUNK_SIZE", "MaskedOutput", "Masker", "relay"]

#: bytes per read. Larger than the default pipe buffer (64 KiB) so that one read
#: drains whatever the pipe holds; the per-read Python overhead then stays small.
CHUNK_SIZE = 256 * 1024
#: pipe capacity asked for (Linux ``F_SETPIPE_SZ``): fewer context switches between
#: a fast writer and the relay. 1 MiB is the default unprivileged maximum
#: (/proc/sys/fs/pipe-max-size); failure to raise it is harmless.
PIPE_SIZE = 1024 * 1024

_REDACTED_BYTES = REDACTED.encode()
#: length of the prefix used to find candidate split values at the end of a read
_PROBE_LENGTH = 8
#: compiled match patterns kept per value subset (see _ValueSet.pattern_for)
_PATTERN_CACHE_SIZE = 64


def _encode(values: Iterable[str]) -> frozenset[bytes]:
    encoded = set()
    for value in values:
        if len(value) < MIN_REDACT_LENGTH:
            continue
        try:
            encoded.add(value.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError:
            # A lone surrogate outside the surrogateescape range: such a value cannot
            # be put into an environment (execve needs bytes), so the child never
            # has it and cannot print it.
            continue
    return frozenset(encoded)


class _ValueSet:
    """An immutable set of byte values with what the scanner precomputes for them.

    Immutable so that :meth:`Masker.update` can swap it with one attribute
    assignment while a relay thread is in the middle of :meth:`Masker.feed`.
    """

    __slots__ = (
        "_cache",
        "groups",
        "longest",
        "ordered",
        "probe",
        "probe_length",
        "short_prefixes",
        "values",
    )

    def __init__(self, values: frozenset[bytes]) -> None:
        self.values = values
        # longest first, so that a regex alternation (tried in order at each
        # position) takes the longest value that starts there
        self.ordered = tuple(sorted(values, key=lambda v: (-len(v), v)))
        self.longest = len(self.ordered[0]) if values else 0
        self.probe_length = min(_PROBE_LENGTH, min((len(v) for v in values), default=1))
        k = self.probe_length
        groups: dict[bytes, list[bytes]] = {}
        for value in self.ordered:
            groups.setdefault(value[:k], []).append(value)
        #: values by their first k bytes, longest first
        self.groups = {prefix: tuple(group) for prefix, group in groups.items()}
        #: finds positions whose next k bytes start some value
        self.probe = re.compile(b"|".join(re.escape(p) for p in groups)) if values else None
        #: every prefix shorter than k of every value: checks the last k-1 positions
        self.short_prefixes = frozenset(v[:j] for v in self.ordered for j in range(1, k))
        self._cache: dict[tuple[bytes, ...], re.Pattern[bytes]] = {}

    def pattern_for(self, present: tuple[bytes, ...]) -> re.Pattern[bytes]:
        """A regex matching, at each position, the longest of ``present`` found there.

        Built for the values actually present in a buffer rather than for all of
        them: a ``re`` alternation costs time per alternative at every position,
        while most reads contain no value or one.
        """
        pattern = self._cache.get(present)
        if pattern is None:
            if len(self._cache) >= _PATTERN_CACHE_SIZE:
                self._cache.clear()
            pattern = re.compile(b"|".join(re.escape(v) for v in present))
            self._cache[present] = pattern
        return pattern

    def undecided_start(self, buf: bytes) -> int:
        """The first position of ``buf`` whose match depends on bytes not read yet.

        That is the start of the longest suffix of ``buf`` that is a proper prefix
        of some value, or ``len(buf)`` when there is none. Every earlier position
        is decided: any value that can still match there lies inside ``buf``.
        """
        n = len(buf)
        k = self.probe_length
        if self.probe is None:
            return n
        pos = max(0, n - self.longest + 1)
        # Positions with at least k bytes after them: a cheap regex finds the ones
        # whose next k bytes start a value, then the few candidates are checked.
        while True:
            m = self.probe.search(buf, pos)
            if m is None:
                break
            start = m.start()
            rest = buf[start:]
            for value in self.groups[m.group()]:
                if len(value) <= len(rest):
                    break  # longest first: the remaining ones are shorter still
                if value.startswith(rest):
                    return start
            pos = start + 1
        # The last k-1 positions, longest suffix first.
        for j in range(min(k - 1, n), 0, -1):
            if buf[n - j :] in self.short_prefixes:
                return n - j
        return n


_EMPTY = _ValueSet(frozenset())


class Masker:
    """Replace secret values in a byte stream fed in arbitrary chunks.

    ``Masker(values)``: ``values`` are strings; see the module docstring for what
    is masked. One Masker per stream: it keeps the held-back tail between calls.
    ``feed`` may run in one thread while ``update`` runs in another.
    """

    __slots__ = ("_carry", "_hidden", "_lock", "_set")

    def __init__(self, values: Iterable[str] = ()) -> None:
        encoded = _encode(values)
        self._set = _ValueSet(encoded) if encoded else _EMPTY
        self._lock = threading.Lock()
        #: bytes read but not emitted yet: they start at the first undecided position
        self._carry = b""
        #: how many leading bytes of the carry are already covered by an emitted
        #: REDACTED (an occurrence that ran past the emitted part); an occurrence
        #: that overlaps them extends that marker instead of adding another one
        self._hidden = 0

    @property
    def longest(self) -> int:
        """Length in bytes of the longest value; the carry never reaches it."""
        return self._set.longest

    @property
    def pending(self) -> int:
        """How many bytes are held back, waiting for more input or :meth:`flush`."""
        return len(self._carry)

    def update(self, values: Iterable[str]) -> None:
        """Add ``values`` to the masked set (after a rotation), atomically.

        The values already masked stay masked: a rotated-away secret is still a
        secret, and a child may print the old one until it restarts. Call this
        before the child can see the new values (before restarting or signalling it).
        """
        with self._lock:
            added = _encode(values) - self._set.values
            if added:
                self._set = _ValueSet(self._set.values | added)

    def _share(self, other: Masker) -> None:
        """Use ``other``'s value set (one compiled set for both streams)."""
        self._set = other._set

    def feed(self, chunk: bytes) -> bytes:
        """Mask ``chunk`` (the next bytes of the stream); return what is safe to emit.

        Holds back only the tail that could be the beginning of a value split
        across reads: fewer than :attr:`longest` bytes.
        """
        values = self._set  # one read: an update() in another thread swaps it whole
        if not values.values:
            return chunk  # nothing to mask: the carry is empty too (sets only grow)
        buf = self._carry + chunk if self._carry else chunk
        return self._emit(values, buf, values.undecided_start(buf))

    def flush(self) -> bytes:
        """At end of stream: mask and return everything held back."""
        buf = self._carry
        if not buf:
            self._hidden = 0
            return b""
        return self._emit(self._set, buf, len(buf))

    def _emit(self, values: _ValueSet, buf: bytes, decided: int) -> bytes:
        """Emit the output for positions before ``decided``; keep ``buf[decided:]``."""
        present = tuple(v for v in values.ordered if v in buf)
        hidden = self._hidden
        if not present and not hidden:
            # The common case: no value anywhere in the buffer.
            self._carry = buf[decided:]
            return buf if decided == len(buf) else buf[:decided]
        search = values.pattern_for(present).search if present else None
        pieces: list[bytes] = []
        run_end = hidden  # end of the current run of hidden bytes
        emitted = hidden  # first byte not yet emitted (or hidden)
        pos = 0
        while search is not None:
            m = search(buf, pos)
            if m is None or m.start() >= decided:
                break  # matches from `decided` on depend on bytes not read yet
            start, end = m.span()
            if start < run_end:
                run_end = max(run_end, end)  # overlaps the current run: extend it
            else:
                pieces.append(buf[emitted:start])
                pieces.append(_REDACTED_BYTES)
                run_end = end
            emitted = run_end
            # Look again from the next position, not from `end`: an occurrence that
            # starts inside this one and ends after it must extend the run, or the
            # end of the other value would be printed.
            pos = start + 1
        if emitted < decided:
            pieces.append(buf[emitted:decided])
        self._carry = buf[decided:]
        self._hidden = max(0, run_end - decided)
        return b"".join(pieces)


def relay(src_fd: int, dst_fd: int, masker: Masker) -> None:
    """Copy ``src_fd`` to ``dst_fd`` through ``masker`` until EOF on ``src_fd``.

    Returns early, without raising, when ``dst_fd`` cannot be written any more
    (EPIPE: the reader of envwrap's output went away, as in ``envwrap --mask --
    yes | head -1``; or EBADF, EIO, ENOSPC). It deliberately stops reading then
    instead of draining: the caller closes ``src_fd`` and the child's next write
    gets EPIPE/SIGPIPE, exactly what it would get without envwrap in between.
    Draining would keep such a child running forever, writing into the void.
    Neither descriptor is closed here.
    """
    while True:
        try:
            data = os.read(src_fd, CHUNK_SIZE)  # EINTR is retried by Python (PEP 475)
        except OSError:
            # EIO (a pty whose other side closed) or EBADF: the source is finished.
            # Ending like EOF keeps a traceback from a relay thread off the terminal.
            data = b""
        if not data:
            break
        out = masker.feed(data)
        if out and not _write_all(dst_fd, out):
            return
    tail = masker.flush()
    if tail:
        _write_all(dst_fd, tail)


def _write_all(fd: int, data: bytes) -> bool:
    """Write all of ``data``; False when the destination is gone or broken."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            # Somebody made our (shared) stdout non-blocking, as some parents do to
            # a TTY or pipe; wait until it can take more instead of losing output.
            poller = select.poll()  # poll, not select: fd may be above FD_SETSIZE
            poller.register(fd, select.POLLOUT)
            poller.poll()
            continue
        except OSError as exc:
            if exc.errno in (
                errno.EPIPE,
                errno.EBADF,
                errno.EIO,
                errno.ENOSPC,
                errno.EINVAL,
                errno.ECONNRESET,
            ):
                return False
            raise
        view = view[written:]
    return True


def _grow_pipe(fd: int) -> None:
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if set_size is None:
        return
    # EPERM above pipe-max-size or past the per-user pipe quota: keep the default
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, set_size, PIPE_SIZE)


class MaskedOutput:
    """Two masked relays, from pipes given to the child to envwrap's stdout/stderr.

    Use::

        out = MaskedOutput(values)              # relays start at once
        proc = spawn(..., stdout=out.child_stdout_fd, stderr=out.child_stderr_fd)
        out.close_child_ends()                  # else the relays never see EOF
        ... wait for the child ...
        out.join(timeout=5)                     # drain what the child wrote

    ``child_stdout_fd`` and ``child_stderr_fd`` are the write ends, not inheritable
    (O_CLOEXEC): the spawner puts them on the child's fd 1 and 2 (``dup2``, as
    ``subprocess.Popen(stdout=fd)`` does). The read ends are never inherited. To
    run several generations of a child through the same relays, keep the write
    ends open until the last one has exited, then call :meth:`close_child_ends`.
    """

    def __init__(self, values: Iterable[str], *, stdout_fd: int = 1, stderr_fd: int = 2) -> None:
        self.stdout_masker = Masker(values)
        self.stderr_masker = Masker()
        self.stderr_masker._share(self.stdout_masker)
        self._update_lock = threading.Lock()
        out_read, self.child_stdout_fd = os.pipe()  # os.pipe() fds are O_CLOEXEC (PEP 446)
        err_read, self.child_stderr_fd = os.pipe()
        self._child_ends_open = True
        for fd in (self.child_stdout_fd, self.child_stderr_fd):
            _grow_pipe(fd)
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(out_read, stdout_fd, self.stdout_masker),
                name="envwrap-mask-stdout",
                daemon=True,
            ),
            threading.Thread(
                target=self._run,
                args=(err_read, stderr_fd, self.stderr_masker),
                name="envwrap-mask-stderr",
                daemon=True,
            ),
        ]
        # daemon: a grandchild that keeps the pipe open must not keep envwrap alive
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _run(src_fd: int, dst_fd: int, masker: Masker) -> None:
        try:
            relay(src_fd, dst_fd, masker)
        finally:
            # Closing the read end is what tells a child whose output nobody reads
            # any more (EPIPE on our side) to stop: its next write fails.
            os.close(src_fd)

    def update(self, values: Iterable[str]) -> None:
        """Add rotated ``values`` to both streams' masked set; old values stay masked."""
        with self._update_lock:
            self.stdout_masker.update(values)
            self.stderr_masker._share(self.stdout_masker)

    def close_child_ends(self) -> None:
        """Close the parent's copies of the child's ends (idempotent).

        Call it once the child is spawned: EOF reaches the relays only when every
        copy of the write ends is closed.
        """
        if self._child_ends_open:
            self._child_ends_open = False
            os.close(self.child_stdout_fd)
            os.close(self.child_stderr_fd)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until both relays reached EOF and wrote everything; True if they did.

        ``timeout`` bounds the whole wait. False means a relay is still running,
        typically because a background grandchild still holds the pipe: its later
        output is lost when envwrap exits (the threads are daemons).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return not any(thread.is_alive() for thread in self._threads)
