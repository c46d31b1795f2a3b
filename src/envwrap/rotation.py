"""What a rotation does (DESIGN §4): re-render ``--render`` files, then restart
the program, signal it, or exit -- only when what the program sees differs.

This is the seam between the watcher (which knows stores) and the supervisor
(which knows processes); neither knows the other.
"""

from __future__ import annotations

from typing import Protocol

from envwrap import audit, launch, log
from envwrap.errors import EnvwrapError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from envwrap.config import Settings
    from envwrap.environment import Composed
    from envwrap.refs import Locator
    from envwrap.runner import Resolved
    from envwrap.watch import OnChange, Watcher

__all__ = [
    "EXIT_ON_CHANGE",
    "ChildControl",
    "RotationHandler",
    "build_watcher",
    "render_files",
    "start_watching",
]

#: the exit code of ``--on-change exit`` (EX_TEMPFAIL): "try again", which makes
#: an orchestrator restart the container with the new secrets
EXIT_ON_CHANGE = 75


class ChildControl(Protocol):
    """The supervisor's operations, as the rotation uses them (thread-safe)."""

    def replace(self, environment: dict[str, str]) -> None: ...

    def send(self, signum: int) -> None: ...

    def request_exit(self, code: int) -> None: ...


def render_files(settings: Settings, composed: Composed) -> None:
    """Write every ``--render`` file from the variables envwrap contributes."""
    if not settings.render:
        return
    from envwrap.render import format_for, render_bytes, write_secret_file

    values = {name: composed.environment[name] for name in composed.contributed}
    for path in settings.render:
        content = render_bytes(values, format_for(path, settings.render_format))
        if write_secret_file(path, content):
            log.info("rendered", file=path)
            audit.record("render", file=path, outcome="ok")


class RotationHandler:
    """The watcher's ``on_change`` for ``envwrap --watch``."""

    def __init__(
        self,
        settings: Settings,
        child_env: dict[str, str],
        child: ChildControl,
        on_values: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.current = child_env
        self.child = child
        self.on_values = on_values

    def __call__(self, composed: Composed, changed: set[Locator]) -> None:
        environment = launch.child_environment(composed.environment, self.settings.pass_env)
        if environment == self.current:
            log.info("a secret changed, but not what the program sees; nothing to do")
            audit.record("rotation", outcome="unchanged", detail=_names(changed))
            return
        try:
            launch.check_exec_limits(environment, self.settings.argv)
            render_files(self.settings, composed)
        except EnvwrapError as err:
            log.error(f"cannot apply the new secrets; the program keeps the current ones: {err}")
            audit.record("rotation", outcome=audit.outcome_of(err.exit_code), detail=str(err))
            return
        if self.on_values is not None:
            self.on_values(composed.secret_values)
        self.current = environment
        audit.record("rotation", outcome="ok", detail=_names(changed))
        if self.settings.cache:  # keep the fallback cache on what the program now runs on
            from envwrap.cache import after_rotation

            after_rotation(composed)
        action = self.settings.on_change
        if action == "signal":
            log.info("secrets changed; signalling the program", signal=self.settings.reload_signal)
            self.child.send(self.settings.reload_signal)
            audit.record("signal", signal=self.settings.reload_signal, outcome="ok")
        elif action == "exit":
            log.info(f"secrets changed; exiting with {EXIT_ON_CHANGE} (--on-change exit)")
            audit.record("exit", outcome="ok", detail=f"exit code {EXIT_ON_CHANGE}")
            self.child.request_exit(EXIT_ON_CHANGE)
        else:
            log.info("secrets changed; restarting the program")
            audit.record("restart", outcome="ok")
            self.child.replace(environment)


def _names(changed: set[Locator]) -> str:
    return ", ".join(sorted(str(loc) for loc in changed))


def build_watcher(settings: Settings, resolved: Resolved, on_change: OnChange) -> Watcher:
    """A watcher of every secret and ``.env`` file of ``resolved`` (not started)."""
    from envwrap import sources
    from envwrap.backends import BackendRegistry
    from envwrap.environment import SecretEnvironment
    from envwrap.watch import Watcher

    environ = resolved.environ
    return Watcher(
        resolved.secrets,
        resolved.registry or BackendRegistry(resolved.secrets.base),
        resolved.fetched,
        on_change,
        interval=settings.interval,
        splay=settings.splay,
        reload=lambda: SecretEnvironment.load(settings, environ),
        dotenv_paths=tuple(sources.dotenv_files(settings.env_file, disabled=settings.no_env_file)),
    )


def start_watching(
    settings: Settings,
    resolved: Resolved,
    child_env: dict[str, str],
    child: ChildControl,
    on_values: Callable[[list[str]], None] | None = None,
) -> Watcher | None:
    """Start the watcher thread of ``envwrap --watch``; ``None`` when nothing can change."""
    watcher = build_watcher(
        settings, resolved, RotationHandler(settings, child_env, child, on_values)
    )
    if not resolved.secrets.has_references and not watcher.dotenv_paths:
        log.info("nothing to watch: no references and no .env file")
        return None
    if settings.cache:
        from envwrap.cache import follow

        follow(watcher)
    watcher.start()
    return watcher
