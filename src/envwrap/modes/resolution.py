"""Resolve once: load the sources, read every reference, compose; fail closed.

Every mode starts here and hands the :class:`~envwrap.environment.Resolved`
result down; nothing below a mode reads the stores for the first time again.
"""

from __future__ import annotations

import time

from envwrap import log
from envwrap.environment import Resolved, SecretEnvironment
from envwrap.errors import ConfigError, EnvwrapError
from envwrap.telemetry import audit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from envwrap.backends import Fetched
    from envwrap.config import Settings
    from envwrap.refs import Locator

__all__ = ["resolve"]


def resolve(settings: Settings, environ: dict[str, str]) -> Resolved:
    """Load the sources and resolve every reference; fail closed."""
    secrets = SecretEnvironment.load(settings, environ)
    registry = None
    fetched: dict[Locator, Fetched] = {}
    if secrets.has_references:
        from envwrap.backends import BackendRegistry
        from envwrap.process.prctl import make_undumpable

        make_undumpable()
        registry = BackendRegistry(secrets.base)
        log.capture_library_logs()
        started = time.monotonic()
        try:
            fetched = secrets.fetch(registry, timeout=settings.start_timeout)
        except EnvwrapError as err:
            audit.record("access", variable=err.variable, reference=err.reference,
                         outcome=audit.outcome_of(err.exit_code), detail=err.message)
            if not settings.cache:
                raise
            from envwrap.cache import fall_back

            fetched = fall_back(secrets, err)  # the error stands unless the cache serves
        else:
            audit.record_reads(secrets.uses(), fetched, time.monotonic() - started)
    try:
        composed = secrets.compose(fetched)
    except EnvwrapError as err:
        if settings.cache:  # a live "no such key" deletes the cache too
            from envwrap.cache import discard_after

            discard_after(err)
        raise
    example = settings.require_example or settings.example
    if example:
        from envwrap.sources import missing_example_keys

        missing = missing_example_keys(example, composed.environment)
        if missing:
            raise ConfigError(
                f"{example!r} lists variables that are not set: {', '.join(missing)}"
            )
    audit.record("resolved", outcome="ok")
    return Resolved(secrets, registry, fetched, composed, environ)
