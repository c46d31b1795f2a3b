"""``--render`` files: secrets written atomically, mode 0600, never through a symlink.

The file is written to a temporary name in the same directory and renamed over
the target, through a descriptor of the directory opened without following a
final symlink, so that a link planted at the target (or a directory swapped in
between two steps) cannot redirect the write. ``os.replace`` replaces a
symlink at the target itself rather than writing through it. A file is
rewritten only when its bytes change, so a watcher of the file sees real
changes only.
"""

from __future__ import annotations

import json
import os
import secrets

from envwrap import log
from envwrap.errors import ConfigError, InvalidValueError
from envwrap.safe_files import open_folder
from envwrap.telemetry import audit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from envwrap.config import Settings
    from envwrap.environment import Composed

__all__ = [
    "format_environment", "format_for", "render_bytes", "render_files", "write_secret_file",
]

_EXTENSION_FORMATS = {".json": "json", ".env": "dotenv"}


def format_for(path: str, requested: str = "auto") -> str:
    """``dotenv`` or ``json``: as requested, else by the file's extension (dotenv by default)."""
    if requested != "auto":
        return requested
    return _EXTENSION_FORMATS.get(os.path.splitext(path)[1].lower(), "dotenv")


def format_environment(values: dict[str, str], fmt: str) -> str:
    """``values`` as ``dotenv``, ``json`` or ``shell`` text, in their order."""
    if fmt == "json":
        return json.dumps(values, indent=2, ensure_ascii=False) + "\n"
    if fmt == "shell":
        import shlex

        return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in values.items())
    return "".join(f"{name}={_dotenv_quoted(name, value)}\n" for name, value in values.items())


def _dotenv_quoted(name: str, value: str) -> str:
    """``value`` quoted so that a POSIX shell (``set -a; . FILE``) and python-dotenv
    both read back exactly ``value``, and a shell runs nothing.

    Single quotes when the value holds no ``'``, no ``\\`` and no ``${`` (python-dotenv
    expands ``${VAR}`` and decodes ``\\'`` even there; a shell does neither). Else
    double quotes, escaping only ``\\`` and ``"`` (the escapes both read alike),
    when it holds no ``$`` and no backquote (a shell would expand them). A value
    that needs both cannot be written so -- :class:`InvalidValueError` (65),
    naming the variable: JSON can hold it.
    """
    if "'" not in value and "\\" not in value and "${" not in value:
        return f"'{value}'"
    if "$" not in value and "`" not in value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise InvalidValueError(
        "the value cannot be written to a dotenv file that a POSIX shell and python-dotenv "
        "both read back unchanged (it holds a quote or a backslash, and $ or `)",
        variable=name,
        hint="write this file as JSON (--render-format json, or a .json name)",
    )


def render_bytes(values: dict[str, str], fmt: str) -> bytes:
    """A ``--render`` file's content: sorted by name, so that it changes only with values."""
    return format_environment(dict(sorted(values.items())), fmt).encode()


def write_secret_file(
    path: str, content: bytes, *, option: str = "--render", only_if_changed: bool = True
) -> bool:
    """Write ``content`` to ``path`` atomically with mode 0600; ``False`` if unchanged.

    Raises :class:`ConfigError` (78) naming ``option`` and the path when the
    directory does not exist or cannot be written, or when the target is not a
    regular file, or when a component of the path is a symbolic link.
    ``only_if_changed=False`` skips reading the current content,
    for files that differ at every write (``--cache``: a fresh salt and nonce).
    """
    directory, name = os.path.split(os.path.abspath(path))
    dir_fd = open_folder(directory, option, path)  # no symbolic link in any component
    try:
        if only_if_changed and _current_bytes(name, dir_fd, path, option) == content:
            return False
        temporary = f".{name}.{secrets.token_hex(6)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temporary, flags, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            raise ConfigError(f"{option} {path!r}: cannot write ({exc.strerror})") from None
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(temporary, dir_fd=dir_fd)
            raise
        os.close(fd)
        try:
            os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:  # the target is a directory, or the folder went read-only
            os.unlink(temporary, dir_fd=dir_fd)
            raise ConfigError(f"{option} {path!r}: cannot replace ({exc.strerror})") from None
        os.fsync(dir_fd)  # make the rename itself durable
        return True
    finally:
        os.close(dir_fd)


def _current_bytes(name: str, dir_fd: int, path: str, option: str) -> bytes | None:
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd
        )
    except FileNotFoundError:
        return None
    except OSError:
        return None  # a symlink or something odd: replace it with our own file
    try:
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{option} {path!r}: exists and is not a regular file")
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def render_files(settings: Settings, composed: Composed) -> None:
    """Write every ``--render`` file from the variables envwrap contributes."""
    if not settings.render:
        return
    values = {name: composed.environment[name] for name in composed.contributed}
    for path in settings.render:
        content = render_bytes(values, format_for(path, settings.render_format))
        if write_secret_file(path, content):
            log.info("rendered", file=path)
            audit.record("render", file=path, outcome="ok")
