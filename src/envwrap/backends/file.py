"""``ref+file://ABSOLUTE-PATH[#KEY]``: a file, e.g. a Kubernetes secret volume.

The content is used as it is, less one trailing newline (``echo x > f`` and
Kubernetes ``stringData`` both add one, and no program wants it in a password).
``#KEY`` and ``#/pointer`` read the file as JSON.
"""

from __future__ import annotations

import errno
import os
import stat

from envwrap.backends.contract import MAX_SECRET_BYTES, Backend, Fetched
from envwrap.errors import AuthError, InvalidValueError, NotFoundError, StoreUnavailableError
from envwrap.refs import Locator

__all__ = ["FileBackend"]

MAX_FILE_BYTES = MAX_SECRET_BYTES


class FileBackend(Backend):
    scheme = "file"

    def watch_paths(self, locator: Locator) -> tuple[str, ...]:
        # the watcher follows the file's folder, which catches the kubelet's
        # ``..data`` symlink swap that replaces a secret volume's files at once
        return (locator.path,)

    def read(self, locator: Locator) -> Fetched:
        raw = _read_regular_file(locator.path)
        if len(raw) > MAX_FILE_BYTES:
            raise InvalidValueError(f"the file is larger than {MAX_FILE_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidValueError("the file is not UTF-8 text") from None
        if text.endswith("\n"):
            text = text[:-2] if text.endswith("\r\n") else text[:-1]
        # files have no version id; change detection compares content
        return Fetched(text)


def _read_regular_file(path: str) -> bytes:
    """At most ``MAX_FILE_BYTES + 1`` bytes of a regular file (symbolic links followed,
    as a Kubernetes secret volume needs).

    Anything else -- a FIFO, a device, a socket -- is refused without being read:
    reading a FIFO blocks start-up until a writer comes, a device may never end
    (docs/SECURITY.md). The type is checked before opening, and again on the
    opened descriptor (``O_NONBLOCK``: opening a FIFO never waits), so a file
    swapped in between is refused too.
    """
    try:
        kind = stat.S_IFMT(os.stat(path).st_mode)
        _refuse_unless_regular(kind)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFoundError("no such file") from None
    except PermissionError:
        raise AuthError("permission denied reading the file") from None
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP):
            raise NotFoundError(f"cannot open the file ({os.strerror(exc.errno)})") from None
        raise StoreUnavailableError(f"cannot read the file ({exc.strerror})") from None
    try:
        _refuse_unless_regular(stat.S_IFMT(os.fstat(fd).st_mode))
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, MAX_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise StoreUnavailableError(f"cannot read the file ({exc.strerror})") from None
    finally:
        os.close(fd)


_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def _refuse_unless_regular(kind: int) -> None:
    if kind == stat.S_IFREG:
        return
    if kind == stat.S_IFDIR:
        raise NotFoundError("the path is a directory, not a file")
    raise InvalidValueError(
        f"the path is {_KINDS.get(kind, 'not a regular file')}, not a regular file: "
        "envwrap does not read it",
        hint="point the reference at a regular file",
    )
