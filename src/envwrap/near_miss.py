"""Values that look like a mistyped reference: ``vualt://``, ``vault:secret/``, ``aws-sn://``.

Such a value is not a reference, so it would reach the program as literal text
and fail there as "wrong password". envwrap warns instead, naming the variable
and the form it probably meant. Ordinary URLs (``https://``, ``postgres://``,
``redis://`` ...) are never a near miss: only a ``SCHEME://`` within one or two
typing mistakes of a known scheme, or a known scheme written in a wrong form
(``vault:/x``, ``vault:secret/x``, ``VAULT://``), is.

Pure and cheap: it runs on every variable at start-up, and gives up at the
first character that cannot be part of a scheme.
"""

from __future__ import annotations

__all__ = ["likely_reference"]

#: schemes that are references bare; ``file`` only as ``ref+file://``
_BARE = ("vault", "aws-sm", "aws-ssm")
_PREFIXED = (*_BARE, "file")
#: real URL schemes a near miss must never be taken for, even when they are close
_ORDINARY = frozenset({
    "amqp", "amqps", "data", "dns", "file", "ftp", "ftps", "git", "grpc", "grpcs", "gs",
    "http", "https", "jdbc", "kafka", "ldap", "ldaps", "mailto", "memcached", "mongodb",
    "mssql", "mysql", "nats", "oracle", "postgres", "postgresql", "redis", "rediss", "s3",
    "sftp", "smtp", "smtps", "sqlite", "ssh", "tcp", "tel", "udp", "unix", "urn", "ws", "wss",
})
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
#: the longest scheme looked at (``aws-ssm`` plus a few typing mistakes)
_LONGEST = 10


def likely_reference(value: str) -> str | None:
    """The reference prefix ``value`` probably meant (``"vault://"``), or None.

    A well-formed reference, an ordinary URL and anything else give None.
    """
    prefixed = value[:4].lower() == "ref+"
    body = value[4:] if prefixed else value
    colon = body.find(":", 0, _LONGEST + 1)
    if colon <= 0:
        return None
    written = body[:colon]
    scheme = written.lower()
    if not _SCHEME_CHARS.issuperset(scheme):
        return None
    well_formed = body[colon + 1 : colon + 3] == "//" and written == scheme
    known = _PREFIXED if prefixed else _BARE
    if scheme in known:
        return None if well_formed else _prefix(scheme, prefixed)
    if scheme in _ORDINARY and not prefixed:
        return None
    if scheme == "arn" or scheme in _PREFIXED or not well_formed:
        return None  # arn: has its own grammar; file:// is a URL; "fault:x" is just text
    best = min(known, key=lambda candidate: _distance(scheme, candidate))
    allowed = 1 if len(best) <= 5 else 2
    return _prefix(best, prefixed) if _distance(scheme, best) <= allowed else None


def _prefix(scheme: str, prefixed: bool) -> str:
    return f"{'ref+' if prefixed or scheme == 'file' else ''}{scheme}://"


def _distance(a: str, b: str) -> int:
    """Edit distance counting a swap of two neighbours as one edit (``valut``/``vault``)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]
