"""The run command: resolve, then exec the program (exec mode) or supervise it."""

from __future__ import annotations

import os

from envwrap.backends.registry import credential_names
from envwrap.environment import child_environment
from envwrap.modes.resolution import resolve
from envwrap.process import launch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from envwrap.config import Settings
    from envwrap.process.listen import Listener

__all__ = ["envwrap_credentials", "run"]


#: words in the name of a variable that holds a credential for envwrap itself
_CREDENTIAL_WORDS = ("TOKEN", "SECRET", "KEY", "PASSWORD")
#: the prefixes of the variables envwrap and its stores read
_STORE_PREFIXES = ("ENVWRAP_", "VAULT_", "BAO_", "AWS_")


def envwrap_credentials(environ: Mapping[str, str]) -> list[bytes]:
    """The values of ``environ`` that are credentials of envwrap or its stores:
    the stores' ``credential_names``, and every ``ENVWRAP_``/``VAULT_``/``AWS_``
    variable named as a token, secret, key or password (the AWS ones go on to
    the program, but no helper process of envwrap's keeps them)."""
    names = credential_names()
    return [
        os.fsencode(value) for name, value in environ.items()
        if name in names or (name.startswith(_STORE_PREFIXES)
                             and any(word in name for word in _CREDENTIAL_WORDS))
    ]


def run(settings: Settings, environ: dict[str, str]) -> int:
    keeper = None
    if settings.supervise or settings.mask:
        # envwrap stays, holding its credentials (VAULT_TOKEN is in its own
        # environment from the start): from here on neither envwrap nor the
        # helpers it forks can be read or traced by the program (docs/SECURITY.md).
        from envwrap.process import guardian, prctl

        prctl.make_undumpable()
        # The guardian (a SIGKILLed envwrap leaves nothing behind) is forked
        # first: before any secret is in memory, which it would otherwise keep
        # a copy of for envwrap's whole life, and before any thread exists. It
        # erases the credentials from its copy of envwrap's memory.
        keeper = guardian.start(envwrap_credentials(environ))
    if settings.cache or settings.cache_key_file:
        from envwrap import cache

        cache.configure(settings, environ)
    resolved = resolve(settings, environ)
    child_env = child_environment(resolved.composed.environment, settings.pass_env,
                                  settings.scrub_env)
    launch.check_exec_limits(child_env, settings.argv)
    if settings.render:
        from envwrap.render import render_files

        render_files(settings, resolved.composed)
    listeners: list[Listener] = []
    if settings.listen:
        from envwrap.process.listen import listen_environment, open_listeners

        listeners = open_listeners(settings.listen)  # before the first start (docs/rotation.md)
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
    from envwrap.modes.supervise import run_supervised

    try:
        return run_supervised(settings, resolved, child_env, listeners, keeper)
    finally:
        for listener in listeners:
            listener.close()
