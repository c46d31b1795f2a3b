"""A reply's status line and headers, read without the ``email`` package.

``http.client`` parses a reply's headers with ``email.parser`` (a feed parser,
a policy object, a case-folding lookup per header asked for): about half of
the Python calls of a whole poll, and measurably more CPU for a resident
process that polls every second (docs/benchmarks.md). :class:`Reply` is
``http.client``'s own response class -- its body reading, chunked decoding and
connection handling are kept -- with :meth:`begin` reading the status line and
the header lines itself, into :class:`Headers`. The transport hands it to its
connections as their ``response_class``.
"""

from __future__ import annotations

import http.client

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

__all__ = ["Headers", "Reply"]

#: what http.client allows too: a longer line, or more lines, is not a reply from Vault
MAX_LINE = 65536
MAX_HEADERS = 100


class Headers:
    """A reply's header fields, names folded to lower case, in the order received."""

    __slots__ = ("_fields",)

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field called ``name`` (any case), else ``default``."""
        wanted = name.lower()
        return next((value for key, value in self._fields if key == wanted), default)

    def get_all(self, name: str, default: list[str] | None = None) -> list[str] | None:
        """Every field called ``name``, else ``default`` (what ``getheader`` asks)."""
        wanted = name.lower()
        return [value for key, value in self._fields if key == wanted] or default

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)


class Reply(http.client.HTTPResponse):
    """``http.client.HTTPResponse`` whose status line and headers are read by :meth:`begin`."""

    def begin(self) -> None:
        if self.headers is not None:
            return  # begun already
        while True:
            version, status, reason = _status_line(self.fp)
            if status != http.client.CONTINUE:
                break
            _header_lines(self.fp)  # a 100 Continue's own headers
        self.code = self.status = status
        self.reason = reason
        self.version = 10 if version in ("HTTP/1.0", "HTTP/0.9") else 11
        headers = Headers(_header_lines(self.fp))
        self.headers = self.msg = headers  # type: ignore[assignment]
        encoding = headers.get("transfer-encoding")
        self.chunked = encoding is not None and encoding.lower() == "chunked"
        self.chunk_left = None
        self.length = None
        length = headers.get("content-length")
        if length is not None and not self.chunked and length.strip().isdigit():
            self.length = int(length)
        if status in (204, 304) or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        connection = (headers.get("connection") or "").lower()
        if self.version == 11:
            self.will_close = "close" in connection
        else:
            self.will_close = "keep-alive" not in connection
        if not self.chunked and self.length is None:
            self.will_close = True  # the body ends when the server closes


def _status_line(fp: BinaryIO) -> tuple[str, int, str]:
    line = _line(fp)
    if not line:
        # the server closed the connection before answering (a kept-alive one, mostly)
        raise http.client.RemoteDisconnected("the server closed the connection")
    text = line.decode("iso-8859-1").rstrip("\r\n")
    version, _, rest = text.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
        raise http.client.BadStatusLine(text[:80])
    return version, int(code), reason.strip()


def _header_lines(fp: BinaryIO) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    while True:
        line = _line(fp)
        if line in (b"\r\n", b"\n", b""):
            return fields
        if len(fields) >= MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        text = line.decode("iso-8859-1")
        if text[:1] in (" ", "\t") and fields:  # an obsolete folded line continues the last
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {text.strip()}")
            continue
        name, colon, value = text.partition(":")
        if not colon:
            raise http.client.BadStatusLine(text[:80])  # not a header: not HTTP
        fields.append((name.strip().lower(), value.strip()))


def _line(fp: BinaryIO) -> bytes:
    line = fp.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise http.client.LineTooLong("a line of the reply")
    return line
