"""The key material of ``--cache``: ``--cache-key-file`` or ``ENVWRAP_CACHE_KEY``
(docs/cache.md).

A key file is refused, as ssh refuses a private key, when anyone but its owner
could read or change it (docs/SECURITY.md, "Cache"): with the key, whoever can
also write the cache file decides what the program starts on during an outage.
"""

from __future__ import annotations

import os

from envwrap.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from envwrap.config import Settings

__all__ = ["KEY_VARIABLE", "MIN_KEY_BYTES", "read_key"]

#: the key material must be at least this long: HKDF does not stretch a weak key
MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 4096
KEY_VARIABLE = "ENVWRAP_CACHE_KEY"
KEY_HINT = "generate one with: (umask 077; openssl rand -base64 32 > FILE)"


def read_key(settings: Settings, environ: Mapping[str, str]) -> bytes:
    """The key material from ``--cache-key-file`` or ``ENVWRAP_CACHE_KEY``.

    Raises :class:`ConfigError` (78) naming the option -- never the key -- when
    there is none, both are given, the file cannot be read or others may read or
    write it, or the key is short. A trailing newline is not part of the key
    (``echo`` and editors add one).
    """
    from envwrap.secret import known_values

    path = settings.cache_key_file
    if path and KEY_VARIABLE in environ:
        raise ConfigError(f"give --cache-key-file or {KEY_VARIABLE}, not both")
    if path:
        source = f"--cache-key-file {path!r}"
        material = _read_file(path, source)
    elif KEY_VARIABLE in environ:
        source = KEY_VARIABLE
        material = os.fsencode(environ[KEY_VARIABLE])
    else:
        raise ConfigError(f"--cache needs a key: --cache-key-file FILE or {KEY_VARIABLE}",
                          hint=KEY_HINT)
    material = material.rstrip(b"\r\n")
    if len(material) < MIN_KEY_BYTES:
        raise ConfigError(f"{source}: the key is shorter than {MIN_KEY_BYTES} bytes",
                          hint=KEY_HINT)
    if len(material) > MAX_KEY_BYTES:
        raise ConfigError(f"{source}: the key is longer than {MAX_KEY_BYTES} bytes")
    # so that the key is redacted wherever it might slip into a message
    known_values.add(material.decode(errors="replace"))
    return material


def _read_file(path: str, source: str) -> bytes:
    """The file's first bytes, after its permissions were checked on the open file
    (a symlink is followed: a Kubernetes Secret volume's files are symlinks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the key ({exc.strerror})",
                          hint=KEY_HINT) from None
    try:
        info = os.fstat(fd)
        exposed = too_open(info.st_mode, info.st_uid)
        if exposed:
            raise ConfigError(
                f"{source}: the key file is {exposed} (mode {info.st_mode & 0o777:04o}); "
                "it must be readable by its owner only",
                hint=f"chmod 600 {path}")
        return os.read(fd, MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the key ({exc.strerror})",
                          hint=KEY_HINT) from None
    finally:
        os.close(fd)


def too_open(mode: int, owner: int) -> str | None:
    """Who else may use a key file of ``mode`` owned by ``owner``; ``None`` when no one.

    Refused: any access for others, write access for the group, and read access
    for the group of a file that envwrap's own user owns (it could ``chmod 600``
    it). A group-readable file owned by *another* user is accepted -- a key that
    root shares with the program's group, which is how Kubernetes mounts a Secret
    volume for a pod with ``fsGroup`` (root:fsGroup, mode 0440) -- as ssh accepts it.
    """
    if mode & 0o007:
        return "open to other users"
    if mode & 0o020:
        return "writable by its group"
    if mode & 0o040 and owner == os.geteuid():
        return "readable by its group"
    return None
