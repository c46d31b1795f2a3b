"""``ref+file://ABSOLUTE-PATH[#KEY]``: a file, e.g. a Kubernetes secret volume.

The content is used as it is, less one trailing newline (``echo x > f`` and
Kubernetes ``stringData`` both add one, and no program wants it in a password).
``#KEY`` and ``#/pointer`` read the file as JSON.
"""

from __future__ import annotations

import errno
import os

from envwrap.backends.contract import Backend, Fetched
from envwrap.errors import AuthError, InvalidValueError, NotFoundError, StoreUnavailableError
from envwrap.refs import Locator

__all__ = ["FileBackend"]

#: a secret file larger than this is a mistake (a log, a disk image), not a secret
MAX_FILE_BYTES = 1024 * 1024


class FileBackend(Backend):
    scheme = "file"

    def watch_paths(self, locator: Locator) -> tuple[str, ...]:
        # the watcher follows the file's folder, which catches the kubelet's
        # ``..data`` symlink swap that replaces a secret volume's files at once
        return (locator.path,)

    def read(self, locator: Locator) -> Fetched:
        path = locator.path
        try:
            with open(path, "rb") as handle:
                raw = handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            raise NotFoundError("no such file") from None
        except PermissionError:
            raise AuthError("permission denied reading the file") from None
        except IsADirectoryError:
            raise NotFoundError("the path is a directory, not a file") from None
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP):
                raise NotFoundError(f"cannot open the file ({os.strerror(exc.errno)})") from None
            raise StoreUnavailableError(f"cannot read the file ({exc.strerror})") from None
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
