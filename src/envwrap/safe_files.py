"""Opening the files envwrap writes (``--render``, ``--audit-log``, ``--cache``) safely.

Another local user who can write to a folder on the way could plant a symbolic
link there (``shared/app -> /victim``) or a FIFO at the file's own name. So
every component of the path is opened with ``O_NOFOLLOW`` from ``/`` down
(a symbolic link anywhere is refused, naming it), the file itself is opened
with ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO never blocks envwrap) and must be a
regular file, and it is left mode 0600 whatever it was.
"""

from __future__ import annotations

import errno
import os
import stat

from envwrap.errors import ConfigError

__all__ = ["open_append", "open_folder"]

_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_folder(path: str, option: str, given: str | None = None) -> int:
    """A descriptor of the folder ``path``, reached without following a symbolic link.

    Raises :class:`ConfigError` (78) naming ``option``, the path the user gave
    (``given``, by default ``path``) and the component that is a link or cannot
    be opened.
    """
    absolute = os.path.abspath(path)
    path = path if given is None else given
    fd = os.open("/", _FOLDER_FLAGS)
    walked = ""
    try:
        for part in absolute.split("/"):
            if not part:
                continue
            walked += "/" + part
            try:
                inner = os.open(part, _FOLDER_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(part, fd):
                    raise ConfigError(
                        f"{option} {path!r}: {walked!r} is a symbolic link, which envwrap "
                        "does not follow",
                        hint=f"give the real path ({os.path.realpath(walked)!r})",
                    ) from None
                raise ConfigError(
                    f"{option} {path!r}: cannot open the folder {walked!r} ({exc.strerror})"
                ) from None
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_append(path: str, option: str) -> int:
    """Open ``path`` to append (created 0600 if missing), never through a link or a FIFO.

    An existing file is made 0600 and must be a regular file. Raises
    :class:`ConfigError` (78) naming ``option`` and the path.
    """
    folder, name = os.path.split(os.path.abspath(path))
    dir_fd = open_folder(folder, option, path)
    try:
        flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                 | os.O_CLOEXEC)
        try:
            fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(f"{option} {path!r}: is a symbolic link, which envwrap "
                                  "does not follow") from None
            if exc.errno == errno.ENXIO:  # a FIFO nobody reads: O_NONBLOCK said so
                raise ConfigError(f"{option} {path!r}: is not a regular file") from None
            raise ConfigError(f"{option} {path!r}: cannot open ({exc.strerror})") from None
    finally:
        os.close(dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{option} {path!r}: is not a regular file")
        try:
            os.fchmod(fd, 0o600)
        except OSError as exc:
            raise ConfigError(f"{option} {path!r}: cannot make it mode 0600 ({exc.strerror})",
                              hint="the file belongs to another user: choose another path"
                              ) from None
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
