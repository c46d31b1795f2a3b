"""``envwrap check`` and ``envwrap export``: resolve, then describe or print."""

from __future__ import annotations

from envwrap.modes.resolution import resolve

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from envwrap.config import Settings

__all__ = ["check", "export"]


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
