"""The one line supervise and sidecar modes say at start, at the default log level.

How many secrets from which stores, how often envwrap looks for changes and
what a change does -- never a value, never a secret's path (docs/reference.md,
"Messages").
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from envwrap.config import Settings
    from envwrap.environment import Composed

__all__ = ["secrets_summary", "sidecar_line", "supervise_line"]

FROM_LABEL = "--from"


def secrets_summary(composed: Composed) -> str:
    """``3 secrets from vault, 1 from aws-sm`` (variables per store); ``--from`` apart."""
    per_store: dict[str, set[str]] = {}
    imports = 0
    for variable, ref in composed.uses:
        if variable == FROM_LABEL:
            imports += 1
            continue
        per_store.setdefault(ref.locator.scheme, set()).add(variable)
    parts: list[str] = []
    count = sum(len(names) for names in per_store.values())
    noun = "secret" if count == 1 else "secrets"
    stores = [f"{len(names)} from {store}" for store, names in per_store.items()]
    if len(stores) == 1:
        parts.append(f"{count} {noun} from {next(iter(per_store))}")
    elif stores:
        parts.append(f"{count} {noun} ({', '.join(stores)})")
    if imports:
        parts.append(f"every key of {imports} secret{'s' if imports > 1 else ''} (--from)")
    return " and ".join(parts) if parts else "no secrets (no references)"


def _changes(settings: Settings, watching: bool, action: str) -> str:
    if not watching:
        if settings.watch:
            return "nothing to watch (no references, no .env file)"
        return "not watching for changes (--watch does)"
    return f"checking for changes every {settings.interval:g}s; on a change: {action}"


def supervise_line(settings: Settings, composed: Composed, *, watching: bool) -> str:
    program = os.path.basename(settings.argv[0]) if settings.argv else "the program"
    action = settings.on_change
    if action == "signal":
        import signal

        action = f"signal {signal.Signals(settings.reload_signal).name}"
    return f"running {program} with {secrets_summary(composed)}; " \
           f"{_changes(settings, watching, action)}"


def sidecar_line(settings: Settings, composed: Composed, target: str | None) -> str:
    import signal

    files = ", ".join(settings.render)
    action = f"render {files}"
    if target:
        action += f", then send {signal.Signals(settings.reload_signal).name} to {target}"
    return f"sidecar: {secrets_summary(composed)} in {files}; {_changes(settings, True, action)}"
