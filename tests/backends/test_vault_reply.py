"""The Vault transport's reply reader (status line and headers without the email
package) against what ``http.client`` itself makes of the same bytes."""

from __future__ import annotations

import http.client
import io

import pytest

from envwrap.backends.vault.reply import MAX_HEADERS, Reply


class _Socket:
    """What ``HTTPResponse`` needs of a socket: ``makefile``."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self.data))


def _read(cls: type[http.client.HTTPResponse], data: bytes,
          method: str = "GET") -> tuple[object, ...]:
    response = cls(_Socket(data), method=method)  # type: ignore[arg-type]
    response.begin()
    body = response.read()
    return (response.status, response.reason, response.version, response.will_close,
            response.getheader("Content-Type"), response.getheader("X-Twice"), body)


REPLIES = {
    "kept alive": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 2\r\n\r\n{}",
    "chunked": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n4\r\n: 1}\r\n0\r\n\r\n",
    "until closed": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it",
    "close": b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    "1.0 keep-alive": b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
    "1.0": b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
    "no content": b"HTTP/1.1 204 No Content\r\nDate: today\r\n\r\n",
    "continue first": b"HTTP/1.1 100 Continue\r\nX-Skip: 1\r\n\r\n"
                      b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /v1/x\r\n"
                      b"Content-Length: 0\r\n\r\n",
    "repeated": b"HTTP/1.1 200 OK\r\nX-Twice: a\r\nx-twice: b\r\nContent-Length: 0\r\n\r\n",
    "no reason": b"HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("name", REPLIES)
def test_a_reply_reads_as_http_client_reads_it(name: str) -> None:
    assert _read(Reply, REPLIES[name]) == _read(http.client.HTTPResponse, REPLIES[name])


def test_a_head_reply_has_no_body() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    assert _read(Reply, data, "HEAD") == _read(http.client.HTTPResponse, data, "HEAD")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", http.client.RemoteDisconnected),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", http.client.BadStatusLine),
        (b"HTTP/1.1 20 OK\r\n\r\n", http.client.BadStatusLine),
        (b"HTTP/1.1 200 OK\r\nnot a header\r\n\r\n", http.client.BadStatusLine),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000 + b"\r\n\r\n", http.client.LineTooLong),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEADERS + 1) + b"\r\n",
         http.client.HTTPException),
    ],
    ids=["closed", "not http", "short status", "no colon", "long line", "too many"],
)
def test_what_is_not_an_http_reply_is_refused(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        Reply(_Socket(data)).begin()  # type: ignore[arg-type]


def test_headers_are_found_in_any_case_and_folded_lines_unfolded() -> None:
    data = (b"HTTP/1.1 200 OK\r\nX-Twice: a\r\nx-twice: b\r\n"
            b"Content-Type: text/plain;\r\n charset=utf-8\r\nContent-Length: 0\r\n\r\n")
    response = Reply(_Socket(data))  # type: ignore[arg-type]
    response.begin()
    # RFC 9112 5.2: an obsolete line folding is replaced by a space
    assert response.getheader("content-type") == "text/plain; charset=utf-8"
    assert response.headers.get("X-TWICE") == "a"
    assert response.headers.get_all("x-twice") == ["a", "b"]
    assert response.headers.get("missing", "default") == "default"
