"""Running store calls side by side: the one place envwrap starts reader threads.

Stores answer slowly and independently, so everything that reads several
secrets -- a backend's default ``read_many``, the AWS batches, the registry
reading from every store of a resolution at once -- runs its calls here.
"""

from __future__ import annotations

from envwrap.errors import EnvwrapError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings anyway
    from collections.abc import Callable, Iterable, Sequence
    from typing import TypeVar

    from envwrap.refs import Locator

    T = TypeVar("T")
    R = TypeVar("R")

__all__ = ["by_scheme", "each", "run_all"]


def run_all(
    jobs: Sequence[Callable[[], T]],
    *,
    limit: int,
    name: str,
    deadline: float | None = None,
    overdue: Callable[[int], T] | None = None,
) -> list[T]:
    """Each job's result, in order; at most ``limit`` run at once, in threads
    named ``envwrap-NAME``. An exception is raised once every job has finished:
    a bug is never swallowed.

    ``deadline`` (a :func:`time.monotonic` time) bounds the wait: a job still
    running then is left behind and ``overdue(index)`` is its result. The
    threads are daemons and nobody joins them, so a read stuck on a store that
    never answers holds up neither a Ctrl-C nor the exit (docs/SECURITY.md).
    Without a deadline a single job runs in the calling thread.
    """
    if len(jobs) <= 1 and deadline is None:
        return [job() for job in jobs]
    import threading
    import time

    pending = list(enumerate(jobs))
    pending.reverse()  # popped from the end: the first job starts first
    results: dict[int, T] = {}
    failures: dict[int, BaseException] = {}
    finished = threading.Condition()

    def work() -> None:
        while True:
            with finished:
                if not pending:
                    return
                index, job = pending.pop()
            try:
                result = job()
            except BaseException as exc:  # handed to the caller, raised there
                with finished:
                    failures[index] = exc
                    finished.notify_all()
                continue
            with finished:
                results[index] = result
                finished.notify_all()

    for _ in range(max(1, min(limit, len(jobs)))):
        threading.Thread(target=work, name=f"envwrap-{name}", daemon=True).start()
    with finished:
        try:
            while len(results) + len(failures) < len(jobs):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                finished.wait(left)
        finally:
            pending.clear()  # a Ctrl-C or the deadline: start nothing more
        done, failed = dict(results), dict(failures)
    if failed:
        raise failed[min(failed)]
    if len(done) < len(jobs) and overdue is None:
        raise TimeoutError(f"envwrap-{name}: jobs still running at the deadline")
    return [done[index] if index in done else overdue(index)  # type: ignore[misc]
            for index in range(len(jobs))]


def each(
    call: Callable[[T], R], items: Sequence[T], *, limit: int, name: str
) -> list[R | EnvwrapError]:
    """``call`` on each item, side by side; an envwrap error becomes that item's result."""

    def capture(item: T) -> R | EnvwrapError:
        try:
            return call(item)
        except EnvwrapError as err:
            return err

    return run_all([_bound(capture, item) for item in items], limit=limit, name=name)


def by_scheme(locators: Iterable[Locator]) -> dict[str, list[Locator]]:
    """The distinct locators of each scheme, in the order they come."""
    groups: dict[str, list[Locator]] = {}
    for locator in dict.fromkeys(locators):
        groups.setdefault(locator.scheme, []).append(locator)
    return groups


def _bound(call: Callable[[T], R], item: T) -> Callable[[], R]:
    return lambda: call(item)
