"""What the supervisor runs, in one frozen object handed to its constructor.

Every setting of :class:`~envwrap.process.supervisor.Supervisor` lives here, as
consul-template's ``child.NewInput`` does: the supervisor is built from a
:class:`ProcessSpec` and nothing is assigned to it afterwards. A plain class
with ``__slots__`` rather than a dataclass or a NamedTuple: supervise start-up
is measured, and neither ``dataclasses`` nor ``typing`` is imported at run time.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable, Mapping, Sequence

    from envwrap.process.ready import ReadyCheck

    #: ``on_event(name, **fields)``: start, ready, child_exit (names and PIDs only)
    OnEvent = Callable[..., None]
    Stdio = tuple[int | None, int | None, int | None]
else:
    import _signal

__all__ = ["ProcessSpec"]


def _ignore_event(event: str, **fields: object) -> None:
    """The default ``on_event``: nobody listens."""


class ProcessSpec:
    """Everything one supervised program needs; immutable once built.

    - ``argv``, ``environment`` (the first generation's), ``cwd`` (where every
      generation starts; envwrap's own folder may be ``/`` by then).
    - ``kill_signal`` and ``kill_timeout``: how a generation is asked to stop,
      and how long it has before its process tree is sent SIGKILL.
    - ``passed_fds``: descriptors (``--listen`` sockets) every generation gets
      on 3, 4, ...; ``extra_environment``: variables added to every
      generation's environment (``LISTEN_FDS``, ``LISTEN_FDNAMES``).
    - ``stdio``: the program's fds 0, 1, 2 where not envwrap's own (``--mask``).
    - ``ready`` (not opened yet: the supervisor opens it, after blocking its
      signals, and closes it when :meth:`~Supervisor.run` returns) and
      ``ready_timeout``: when a generation counts as ready.
    - ``on_event(name, **fields)``: what happened to the generations
      (``start`` with pid and reason, ``ready`` with pid, ``child_exit`` with
      pid and code), called on the supervisor's thread; it must be quick.
    - ``clock``: the monotonic clock deadlines are measured on (tests move it).
    """

    __slots__ = ("argv", "clock", "cwd", "environment", "extra_environment", "kill_signal",
                 "kill_timeout", "on_event", "passed_fds", "ready", "ready_timeout", "stdio")

    argv: tuple[str, ...]
    environment: Mapping[str, str]
    cwd: str | None
    kill_signal: int
    kill_timeout: float
    passed_fds: tuple[int, ...]
    extra_environment: Mapping[str, str]
    stdio: Stdio
    ready: ReadyCheck | None
    ready_timeout: float
    on_event: OnEvent
    clock: Callable[[], float]

    def __init__(
        self,
        argv: Sequence[str],
        environment: Mapping[str, str],
        *,
        cwd: str | None = None,
        kill_signal: int = _signal.SIGTERM,
        kill_timeout: float = 10.0,
        passed_fds: Sequence[int] = (),
        extra_environment: Mapping[str, str] | None = None,
        stdio: Stdio = (None, None, None),
        ready: ReadyCheck | None = None,
        ready_timeout: float = 60.0,
        on_event: OnEvent = _ignore_event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not argv:
            raise ValueError("argv is empty")
        fields = {
            "argv": tuple(argv), "environment": dict(environment), "cwd": cwd,
            "kill_signal": kill_signal, "kill_timeout": kill_timeout,
            "passed_fds": tuple(passed_fds), "extra_environment": dict(extra_environment or {}),
            "stdio": stdio, "ready": ready, "ready_timeout": ready_timeout,
            "on_event": on_event, "clock": clock,
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ProcessSpec is frozen; cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"ProcessSpec is frozen; cannot delete {name}")

    def __repr__(self) -> str:  # never the environment: it holds secrets
        return f"ProcessSpec(argv={list(self.argv)!r}, cwd={self.cwd!r})"
