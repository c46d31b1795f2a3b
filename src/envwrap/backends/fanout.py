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


def run_all(jobs: Sequence[Callable[[], T]], *, limit: int, name: str) -> list[T]:
    """Each job's result, in order; at most ``limit`` run at once, in threads
    named ``envwrap-NAME``. A single job runs in the calling thread. An
    exception is raised once every job has finished: a bug is never swallowed."""
    if len(jobs) <= 1:
        return [job() for job in jobs]
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(limit, len(jobs)))
    with ThreadPoolExecutor(workers, thread_name_prefix=f"envwrap-{name}") as pool:
        futures = [pool.submit(job) for job in jobs]
    return [future.result() for future in futures]


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
