"""``envwrap import``: move a ``.env``'s values into one secret, and write the ``.env``
that refers to it (docs/import.md).

The files are read as a run reads them; every value that is not already a
reference becomes one key of the secret ``--to`` (``--only``, ``--exclude``
and the store settings envwrap itself needs aside). The store is written
first, then ``--write FILE``: the same lines, each moved value replaced by
``REF#NAME``. What is printed names variables and secrets, never a value.
"""

from __future__ import annotations

from envwrap import log, sources
from envwrap.errors import ConfigError, EnvwrapError, UsageError
from envwrap.secret import Secret
from envwrap.telemetry import audit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from dotenv.parser import Binding

    from envwrap.config import Settings
    from envwrap.refs import Reference

    Line = tuple[str, Binding, str | None]

__all__ = ["KEPT_PREFIXES", "import_env"]

#: what envwrap needs to reach the stores stays in the .env: moved into a store,
#: it could not be read to reach that store
KEPT_PREFIXES = ("VAULT_", "AWS_", "ENVWRAP_")


def import_env(settings: Settings, environ: dict[str, str], write: Callable[[str], object]) -> int:
    target = _target(settings.to or "")
    paths = sources.dotenv_files(
        settings.env_file, disabled=settings.no_env_file, folder=settings.start_folder
    )
    if not paths:
        raise ConfigError("no .env file to import: ./.env does not exist",
                          hint="name the file with --env-file FILE")
    lines = list(sources.dotenv_lines(paths, environ))
    values = {b.key: v for _, b, v in lines if b.key is not None and v is not None}
    for value in values.values():
        Secret(value)  # redact these from any message from here on
    moved, kept = _choose(values, settings, target)
    if settings.write:
        _warn_expansions(lines, set(moved))
    if not moved:
        write("nothing to move: " + (_describe(kept) or "the files set no variable") + "\n")
        return 0
    keys = ", ".join(moved)
    if settings.dry_run:
        write(f"would write {len(moved)} keys to {target.text}: {keys}\n")
        if kept:
            write(f"would keep as they are: {_describe(kept)}\n")
        if settings.write:
            write(f"would write {_shown(settings.write, settings.start_folder)} with references "
                  "in place of those values\n")
        write("nothing written (--dry-run)\n")
        return 0
    from envwrap.process.prctl import make_undumpable

    make_undumpable()  # the values are in memory now
    version = _store(target, {name: values[name] for name in moved}, settings, environ, values)
    at = f" (version {version})" if version else ""
    write(f"wrote {len(moved)} keys to {target.text}{at}: {keys}\n")
    if kept:
        write(f"kept as they are: {_describe(kept)}\n")
    if settings.write:
        from envwrap.render import write_secret_file

        content = _rewritten(lines, set(moved), target.text, multiple=len(paths) > 1)
        write_secret_file(settings.write, content.encode(), option="--write",
                          only_if_changed=False)
        write(f"wrote {_shown(settings.write, settings.start_folder)}: {len(moved)} values "
              "replaced by references\n")
    else:
        write("the .env files still hold the values: --write FILE writes one with references\n")
    return 0


def _shown(path: str, folder: str) -> str:
    """``path`` as the user most likely wrote it: relative to the start folder when inside."""
    import os

    relative = os.path.relpath(path, folder) if folder else path
    return path if relative.startswith("..") else relative


def _target(text: str) -> Reference:
    """``--to``: a whole secret (no ``#KEY``, no version), as a reference."""
    from envwrap.refs import parse_reference

    ref = parse_reference(text)
    if ref is None and not text.startswith("ref+") and "://" in text:
        ref = parse_reference("ref+" + text)
    if ref is None:
        raise UsageError("--to needs a reference to a secret", reference=text,
                         hint="for example --to vault://secret/app or --to aws-sm://prod/app")
    if ref.key is not None or ref.locator.param("version") or ref.locator.param("version-id") \
            or ref.locator.param("version-stage"):
        raise UsageError("--to names a whole secret: no #KEY, no version",
                         reference=text, hint="for example --to vault://secret/app")
    return ref


def _choose(
    values: dict[str, str], settings: Settings, target: Reference
) -> tuple[list[str], dict[str, str]]:
    """The names to move, and those kept with why."""
    from envwrap.environment import parse_templates
    from envwrap.refs import parse_reference

    only = _names(settings.only)
    unknown = sorted(only - set(values))
    if unknown:
        raise UsageError(f"--only names variables that no .env file sets: {', '.join(unknown)}")
    excluded = _names(settings.exclude)
    references = parse_templates(values)
    moved: list[str] = []
    kept: dict[str, str] = {}
    for name in values:
        if name in references:
            kept[name] = "already a reference"
        elif name.startswith(KEPT_PREFIXES):
            kept[name] = "envwrap's store setting"
        elif name in excluded or (only and name not in only):
            kept[name] = "--exclude" if name in excluded else "not in --only"
        else:
            ref = parse_reference(f"{target.text}#{name}")
            if ref is None or ref.key != name:  # cannot be written as a #KEY
                kept[name] = "its name cannot be a #KEY"
            else:
                moved.append(name)
    return moved, kept


def _names(items: list[str]) -> set[str]:
    return {name.strip() for item in items for name in item.split(",") if name.strip()}


def _describe(kept: dict[str, str]) -> str:
    by_reason: dict[str, list[str]] = {}
    for name, reason in kept.items():
        by_reason.setdefault(reason, []).append(name)
    return "; ".join(f"{', '.join(names)} ({reason})" for reason, names in by_reason.items())


def _store(
    target: Reference, data: dict[str, str], settings: Settings, environ: dict[str, str],
    dotenv: dict[str, str],
) -> str | None:
    from envwrap.backends import BackendRegistry

    # the store's settings may live in .env (VAULT_ADDR), as for a run
    registry = BackendRegistry(sources.merge(environ, dotenv, override=False))
    log.capture_library_logs()
    where = {"store": target.locator.scheme, "path": target.locator.path_with_query,
             "detail": "keys: " + ", ".join(data)}
    try:
        backend = registry.get(target.locator.scheme)
        backend.validate(target.locator)
        version = backend.write(target.locator, data, replace=settings.force)
    except EnvwrapError as err:
        audit.record("write", **where, outcome=audit.outcome_of(err.exit_code))
        raise err.about(reference=target.text) from None
    finally:
        registry.close()
    audit.record("write", **where, version=version, outcome="ok")
    return version


def _warn_expansions(lines: list[Line], moved: set[str]) -> None:
    """A value kept as written that expands ``${NAME}`` of a moved one would see the
    reference text from now on, not the value: say so."""
    for _path, binding, _value in lines:
        if binding.key is None or binding.key in moved or binding.value is None:
            continue
        uses = sorted(name for name in moved
                      if f"${{{name}}}" in binding.value or f"${{{name}:-" in binding.value)
        if uses:
            names = ", ".join(f"${{{name}}}" for name in uses)
            log.warning(f"{binding.key} stays as written but expands {names}: from now on it "
                        "gets the references' text, not the values; move it too or write the "
                        "value in place")


def _rewritten(lines: list[Line], moved: set[str], ref: str, *, multiple: bool) -> str:
    """The files' lines, each moved value replaced by its reference.

    Comments and blank lines stay; a comment at the end of a moved line goes
    with the value (it cannot be told apart from the value without quoting
    rules). Several files are joined in order, which keeps what wins.
    """
    out: list[str] = []
    current = ""
    for path, binding, _value in lines:
        if multiple and path != current:
            out.append(f"# from {path}\n")
            current = path
        original = binding.original.string
        key = binding.key
        if key is not None and key in moved:
            line = original.lstrip()
            blank = original[: len(original) - len(line)]  # the blank lines before it
            export = "export " if line.startswith("export ") else ""
            out.append(f"{blank[: blank.rfind(chr(10)) + 1]}{export}{key}={ref}#{key}\n")
        else:
            out.append(original if original.endswith("\n") else original + "\n")
    return "".join(out)
