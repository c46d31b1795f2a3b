"""Where variables come from: the process environment and ``.env`` files.

``.env`` files are parsed with python-dotenv, so its quoting and ``${VAR}``
expansion apply; ``${VAR}`` sees the process environment and every earlier
file. A line that does not parse is an error naming the file and the line
number -- never the line's content, which may hold a secret.
python-dotenv is imported only when there is a file to read.
"""

from __future__ import annotations

import os

from envwrap.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings anyway
    from collections.abc import Iterable, Iterator, Mapping

    from dotenv.parser import Binding

__all__ = [
    "DEFAULT_ENV_FILE", "dotenv_files", "dotenv_lines", "load_dotenv_files", "merge",
    "missing_example_keys",
]

DEFAULT_ENV_FILE = ".env"


def dotenv_files(
    explicit: Iterable[str], *, disabled: bool, folder: str = "", missing: bool = False
) -> list[str]:
    """The ``.env`` files to read: the ``--env-file`` ones, else ``.env`` in ``folder``
    (the start folder; the current one if empty) if present -- or even when absent
    with ``missing``, for the watcher, which picks it up once it appears."""
    if disabled:
        return []
    files = list(explicit)
    if files:
        return files
    default = os.path.join(folder, DEFAULT_ENV_FILE)
    return [default] if missing or os.path.isfile(default) else []


def load_dotenv_files(paths: Iterable[str], environ: Mapping[str, str]) -> dict[str, str]:
    """Parse ``.env`` files in order, each line once, with python-dotenv's grammar.

    ``${VAR}`` and ``${VAR:-default}`` are expanded as python-dotenv does (in
    every kind of quoting), against the values set by earlier lines -- of this
    file and of every earlier file, so ``.env.local`` sees what ``.env`` set --
    and then the process environment ``environ``, as ``dotenv run`` does. A
    later file's value wins over an earlier one's.

    The expansion is ours, on python-dotenv's parser (``parse_stream``) and
    variable grammar (``parse_variables``): its own ``resolve_variables``
    copies the whole environment for every line, which is quadratic in the
    file's length. Here each line looks its names up in place.

    Raises :class:`ConfigError` (78) for a missing or unreadable file, or for a
    line that does not parse (naming the line, not its content).
    """
    values: dict[str, str] = {}
    for _path, binding, value in dotenv_lines(paths, environ):
        if binding.key is not None and value is not None:
            values[binding.key] = value
    return values


def dotenv_lines(
    paths: Iterable[str], environ: Mapping[str, str]
) -> Iterator[tuple[str, Binding, str | None]]:
    """Every line of the files, in order: (file, python-dotenv's binding, expanded value).

    The value is ``None`` for a comment, a blank line or a bare ``KEY``; the
    binding's ``original.string`` is the line as written (``envwrap import``
    rewrites files from it). Expansion as :func:`load_dotenv_files` describes.
    """
    paths = list(paths)
    if not paths:
        return  # python-dotenv imports logging: not worth it for nothing to read
    import io
    from collections import ChainMap

    from dotenv.parser import parse_stream
    from dotenv.variables import parse_variables

    values: dict[str, str] = {}
    scope = ChainMap(values, environ)  # type: ignore[arg-type]  # read-only lookups
    for path in paths:
        for binding in parse_stream(io.StringIO(_read(path))):
            if binding.error:
                raise _unparsable(path, binding.original.line)
            if binding.key is None or binding.value is None:
                yield path, binding, None  # a comment, a blank line, or a bare KEY
                continue
            value = "".join(atom.resolve(scope) for atom in parse_variables(binding.value))
            values[binding.key] = value
            yield path, binding, value


def _unparsable(path: str, line: int) -> ConfigError:
    return ConfigError(
        f"env file {path!r}, line {line}: this line does not parse",
        hint="check its quoting; the line is not shown because it may hold a secret",
    )


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ConfigError(f"env file {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read env file {path!r}: {reason}") from None


def _keys(path: str, text: str) -> list[str]:
    """The keys a file sets, in order; raises on the first line that does not parse."""
    import io

    from dotenv.parser import parse_stream

    keys: list[str] = []
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise _unparsable(path, binding.original.line)
        if binding.key is not None:
            keys.append(binding.key)
    return keys


def merge(
    environ: Mapping[str, str], dotenv: Mapping[str, str], *, override: bool
) -> dict[str, str]:
    """The process environment wins over ``.env`` unless ``override``."""
    if override:
        return {**environ, **dotenv}
    return {**dotenv, **environ}


def missing_example_keys(example_path: str, environment: Mapping[str, str]) -> list[str]:
    """The keys of an example file (``.env.example``) that ``environment`` lacks."""
    keys = _keys(example_path, _read(example_path))
    return [key for key in dict.fromkeys(keys) if key not in environment]
