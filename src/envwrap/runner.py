"""Wires the modes: exec, supervise (--init / --watch), check, export, sidecar."""

from __future__ import annotations

import time

from envwrap import audit, launch, log
from envwrap.environment import SecretEnvironment
from envwrap.errors import ConfigError, EnvwrapError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from envwrap.backends import BackendRegistry, Fetched
    from envwrap.config import Settings
    from envwrap.environment import Composed
    from envwrap.listen import Listener
    from envwrap.refs import Locator

__all__ = ["dispatch"]


def dispatch(settings: Settings, environ: dict[str, str], write: Callable[[str], object]) -> int:
    """Run the command of ``settings``; ``write`` prints its output (cli owns stdout)."""
    from envwrap.config import make_paths_absolute

    make_paths_absolute(settings)
    audit.configure(settings.audit_log)
    if settings.metrics and settings.command in ("run", "sidecar"):
        # before the first resolution: /readyz answers 503 while the stores are slow
        from envwrap.metrics_http import start_metrics

        start_metrics(settings)
    if settings.command == "check":
        return check(settings, environ, write)
    if settings.command == "export":
        return export(settings, environ, write)
    if settings.command == "sidecar":
        from envwrap.sidecar import run_sidecar

        return run_sidecar(settings, environ)
    return run(settings, environ)


class Resolved:
    """An environment loaded and resolved once, with the registry that read it."""

    def __init__(
        self,
        secrets: SecretEnvironment,
        registry: BackendRegistry | None,
        fetched: dict[Locator, Fetched],
        composed: Composed,
        environ: dict[str, str],
    ) -> None:
        #: the process environment envwrap started with (to reload .env from)
        self.environ = environ
        self.secrets = secrets
        self.registry = registry
        self.fetched = fetched
        self.composed = composed


def resolve(settings: Settings, environ: dict[str, str]) -> Resolved:
    """Load the sources and resolve every reference; fail closed."""
    secrets = SecretEnvironment.load(settings, environ)
    registry = None
    fetched: dict[Locator, Fetched] = {}
    if secrets.has_references:
        from envwrap.backends import BackendRegistry
        from envwrap.hygiene import make_undumpable

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


def run(settings: Settings, environ: dict[str, str]) -> int:
    keeper = None
    if settings.supervise or settings.mask:
        # The guardian (a SIGKILLed envwrap leaves nothing behind) is forked
        # first: before any secret is in memory, which it would otherwise keep
        # a copy of for envwrap's whole life, and before any thread exists.
        from envwrap import guardian

        keeper = guardian.start()
    if settings.cache or settings.cache_key_file:
        from envwrap import cache

        cache.configure(settings, environ)
    resolved = resolve(settings, environ)
    child_env = launch.child_environment(resolved.composed.environment, settings.pass_env)
    launch.check_exec_limits(child_env, settings.argv)
    if settings.render:
        from envwrap.rotation import render_files

        render_files(settings, resolved.composed)
    listeners: list[Listener] = []
    if settings.listen:
        from envwrap.listen import listen_environment, open_listeners

        listeners = open_listeners(settings.listen)  # before the first start (DESIGN §9)
    if settings.cache:  # the program can start on these values: keep them
        from envwrap.cache import remember_start

        remember_start(resolved.composed)
    if not (settings.supervise or settings.mask):
        if resolved.registry is not None:
            resolved.registry.close()
        if listeners:
            child_env = {**child_env, **listen_environment(listeners)}
            launch.exec_command(settings.argv, child_env, [s.fileno() for s in listeners])
        launch.exec_command(settings.argv, child_env)
    from envwrap.supervise_mode import run_supervised

    try:
        return run_supervised(settings, resolved, child_env, listeners, keeper)
    finally:
        for listener in listeners:
            listener.close()


def check(settings: Settings, environ: dict[str, str], write: Callable[[str], object]) -> int:
    resolved = resolve(settings, environ)
    rows = [("VARIABLE", "STORE", "PATH", "KEY", "VERSION")]
    for variable, ref in resolved.secrets.uses():
        version = resolved.fetched[ref.locator].version
        rows.append(
            (variable, ref.locator.scheme, ref.locator.path_with_query, ref.key or "-",
             version or "-")
        )
    if len(rows) == 1:
        write("no references\n")
        return 0
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        write(line.rstrip() + "\n")
    return 0


def export(settings: Settings, environ: dict[str, str], write: Callable[[str], object]) -> int:
    """Print what envwrap contributes (``.env``, references, ``--from``), values included."""
    resolved = resolve(settings, environ)
    environment = resolved.composed.environment
    names = resolved.composed.contributed
    from envwrap.render import format_environment

    write(format_environment({n: environment[n] for n in names}, settings.format))
    return 0
