"""``envwrap check`` and ``envwrap export``: resolve, then describe or print."""

from __future__ import annotations

from envwrap.modes.resolution import resolve

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from envwrap.config import Settings

__all__ = ["check", "export"]


def check(settings: Settings, environ: dict[str, str], write: Callable[[str], object]) -> int:
    """Where each reference resolves from, as a table or (``--format json``) a JSON list.

    Resolution fails closed before anything is written, so the exit code is a
    run's and a CI gate needs only the exit code and, if it likes, the list.
    """
    resolved = resolve(settings, environ)
    uses = [
        (variable, ref.locator.scheme, ref.locator.path_with_query, ref.key,
         resolved.fetched[ref.locator].version)
        for variable, ref in resolved.secrets.uses()
    ]
    if settings.format == "json":
        import json

        fields = ("variable", "store", "path", "key", "version")
        write(json.dumps([dict(zip(fields, use, strict=True)) for use in uses], indent=2) + "\n")
        return 0
    rows = [("VARIABLE", "STORE", "PATH", "KEY", "VERSION")]
    rows += [(v, store, path, key or "-", version or "-") for v, store, path, key, version in uses]
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
