"""Reference grammar: pure parsing, no I/O.

A value is either a literal (returned as ``None`` by :func:`parse_value`), one
whole reference, or a template of literal text and inline ``${REF}`` references.

Built-in schemes are recognised bare (``vault://``) and with the ``ref+``
prefix that vals users know; a plug-in scheme only with ``ref+`` (``ref+gcp://``),
so that ordinary URLs such as ``redis://`` are never mistaken for references and
start-up never has to ask the installed plug-ins which schemes they serve.

This module is imported on the start-up path whenever a value might hold a
reference, so it avoids heavy imports (no ``re``, ``dataclasses``, ``typing``).
"""

from __future__ import annotations

from envwrap.errors import ReferenceSyntaxError

__all__ = [
    "BUILTIN_SCHEMES",
    "Locator",
    "Reference",
    "Template",
    "might_hold_reference",
    "parse_reference",
    "parse_value",
]

#: canonical scheme -> query parameters it accepts
BUILTIN_SCHEMES: dict[str, frozenset[str]] = {
    "vault": frozenset({"version"}),
    "aws-sm": frozenset({"version-stage", "version-id", "region"}),
    "aws-ssm": frozenset({"region"}),
    "file": frozenset(),
    "memory": frozenset({"version"}),
}
# schemes that are references without the ``ref+`` prefix; ``file://`` and
# ``memory://`` are ordinary text unless written ``ref+file://`` / ``ref+memory://``.
_BARE_PREFIXES = ("vault://", "aws-sm://", "aws-ssm://")
_CANDIDATE_PREFIXES = (*_BARE_PREFIXES, "arn:", "ref+")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")
_FORBIDDEN_CHARS = frozenset(" \t\r\n\x00\x0b\x0c")


def might_hold_reference(value: str) -> bool:
    """Cheap test used on every variable: can this value hold a reference at all?"""
    return value.startswith(_CANDIDATE_PREFIXES) or "${" in value


class Locator:
    """One distinct secret in one store: a reference without its ``#KEY``.

    Every variable that refers to the same locator is served from one read, so
    several variables from one secret always come from the same version of it.
    """

    __slots__ = ("params", "path", "scheme")

    def __init__(self, scheme: str, path: str, params: tuple[tuple[str, str], ...] = ()) -> None:
        self.scheme = scheme
        self.path = path
        self.params = tuple(sorted(params))

    def param(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return default

    def _key(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        return (self.scheme, self.path, self.params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Locator) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def path_with_query(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.params)
        return self.path + (f"?{query}" if query else "")

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path_with_query}"

    def __repr__(self) -> str:
        return f"Locator({str(self)!r})"


class Reference:
    """A locator plus the part of the secret to use.

    ``key`` is ``None`` (the whole secret), a top-level field name, or a JSON
    pointer starting with ``/`` (RFC 6901). ``text`` is the reference as written.
    """

    __slots__ = ("key", "locator", "text")

    def __init__(self, locator: Locator, key: str | None, text: str) -> None:
        self.locator = locator
        self.key = key
        self.text = text

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Reference)
            and other.locator == self.locator
            and other.key == self.key
        )

    def __hash__(self) -> int:
        return hash((self.locator, self.key))

    def __repr__(self) -> str:
        return f"Reference({self.text!r})"


class Template:
    """A value made of literal text and references, in order."""

    __slots__ = ("parts",)

    def __init__(self, parts: tuple[str | Reference, ...]) -> None:
        self.parts = parts

    @property
    def references(self) -> tuple[Reference, ...]:
        return tuple(p for p in self.parts if isinstance(p, Reference))

    @property
    def is_whole(self) -> bool:
        return len(self.parts) == 1 and isinstance(self.parts[0], Reference)

    def __repr__(self) -> str:
        return f"Template({self.parts!r})"


def parse_value(value: str) -> Template | None:
    """Split a variable's value into literal text and references.

    Returns ``None`` for a plain value. Raises :class:`ReferenceSyntaxError`
    (exit 64) when something is clearly meant as a reference but malformed.
    """
    if not might_hold_reference(value):
        return None
    if value.startswith(_CANDIDATE_PREFIXES) and "${" not in value:
        whole = parse_reference(value)
        return None if whole is None else Template((whole,))
    parts: list[str | Reference] = []
    literal_start = 0
    search_from = 0
    found = False
    while True:
        start = value.find("${", search_from)
        if start < 0:
            break
        end = value.find("}", start + 2)
        if end < 0:
            candidate = value[start + 2 :]
            if candidate.startswith(_CANDIDATE_PREFIXES) and parse_reference(candidate):
                raise ReferenceSyntaxError(
                    "inline reference is missing its closing '}'",
                    reference=_shorten(candidate),
                )
            break
        inner = value[start + 2 : end]
        ref = parse_reference(inner) if inner.startswith(_CANDIDATE_PREFIXES) else None
        if ref is None:
            search_from = start + 2
            continue
        if start > literal_start:
            parts.append(value[literal_start:start])
        parts.append(ref)
        found = True
        literal_start = search_from = end + 1
    if not found:
        return None
    if literal_start < len(value):
        parts.append(value[literal_start:])
    return Template(tuple(parts))


def parse_reference(text: str) -> Reference | None:
    """Parse one reference; ``None`` when ``text`` is not a reference at all."""
    body = text
    prefixed = body.startswith("ref+")
    if prefixed:
        body = body[4:]
    if body.startswith("arn:"):
        return _parse_arn(text, body)
    scheme, sep, rest = body.partition("://")
    if not sep or not scheme or not set(scheme) <= _SCHEME_CHARS:
        if prefixed:
            raise ReferenceSyntaxError(
                "expected 'ref+SCHEME://...'", reference=_shorten(text)
            )
        return None
    if not prefixed and scheme not in ("vault", "aws-sm", "aws-ssm"):
        return None
    _check_characters(text)
    location, _, key = _split_key(text, rest)
    path, _, query = location.partition("?")
    params = _parse_query(text, query)
    _check_scheme(text, scheme, path, params)
    return Reference(Locator(scheme, path, params), key, text)


def _parse_arn(text: str, arn_text: str) -> Reference | None:
    # arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE -- only Secrets Manager secrets
    # and SSM parameters are references; every other ARN (an IAM role, say) is text.
    fields = arn_text.split(":", 5)
    if len(fields) < 6 or not fields[1].startswith("aws"):
        return None
    service, region, resource = fields[2], fields[3], fields[5]
    if service == "secretsmanager" and resource.startswith("secret:"):
        scheme = "aws-sm"
    elif service == "ssm" and resource.startswith("parameter/"):
        scheme = "aws-ssm"
    else:
        return None
    _check_characters(text)
    location, _, key = _split_key(text, arn_text)
    arn, _, query = location.partition("?")
    params = dict(_parse_query(text, query))
    if not region:
        raise ReferenceSyntaxError("the ARN has no region", reference=_shorten(text))
    if params.setdefault("region", region) != region:
        raise ReferenceSyntaxError(
            "'?region=' contradicts the region of the ARN", reference=_shorten(text)
        )
    if not resource.partition("/" if scheme == "aws-ssm" else ":")[2]:
        raise ReferenceSyntaxError("the ARN names no secret", reference=_shorten(text))
    parsed = tuple(params.items())
    _check_scheme(text, scheme, arn, parsed)
    return Reference(Locator(scheme, arn, parsed), key, text)


def _split_key(text: str, rest: str) -> tuple[str, str, str | None]:
    location, sep, key = rest.partition("#")
    if not sep:
        return location, "", None
    if not key:
        raise ReferenceSyntaxError("empty key after '#'", reference=_shorten(text))
    if key.startswith("/"):
        _check_pointer(text, key)
    return location, sep, key


def _check_pointer(text: str, pointer: str) -> None:
    # RFC 6901: '~' must be followed by '0' or '1'
    index = pointer.find("~")
    while index >= 0:
        if pointer[index + 1 : index + 2] not in ("0", "1"):
            raise ReferenceSyntaxError(
                "bad JSON pointer: '~' must be followed by 0 or 1", reference=_shorten(text)
            )
        index = pointer.find("~", index + 1)


def _parse_query(text: str, query: str) -> tuple[tuple[str, str], ...]:
    if not query:
        return ()
    params: dict[str, str] = {}
    for item in query.split("&"):
        name, sep, value = item.partition("=")
        if not name or not sep or not value:
            raise ReferenceSyntaxError(
                f"bad query parameter {_shorten(item)!r}: expected NAME=VALUE",
                reference=_shorten(text),
            )
        if name in params:
            raise ReferenceSyntaxError(
                f"query parameter {name!r} given twice", reference=_shorten(text)
            )
        params[name] = value
    return tuple(params.items())


def _check_scheme(
    text: str, scheme: str, path: str, params: tuple[tuple[str, str], ...]
) -> None:
    if not path:
        raise ReferenceSyntaxError("the reference names no path", reference=_shorten(text))
    # "secret/app/../db" would be read as secret/db by the store's HTTP layer while
    # check, audit and metrics name another path: the path named must be the path read
    segments = path[1:].split("/") if path.startswith("/") else path.split("/")
    if not {"", ".", ".."}.isdisjoint(segments):
        raise ReferenceSyntaxError(
            "the path has an empty, '.' or '..' segment: write the path as the store holds it",
            reference=_shorten(text),
        )
    allowed = BUILTIN_SCHEMES.get(scheme)
    if allowed is None:
        return  # a plug-in's scheme: its backend validates its own parameters
    for name, _ in params:
        if name not in allowed:
            accepted = ", ".join(sorted(allowed)) or "none"
            raise ReferenceSyntaxError(
                f"unknown query parameter {name!r} for {scheme}:// (accepted: {accepted})",
                reference=_shorten(text),
            )
    given = dict(params)
    if scheme in ("vault", "memory"):
        if path.startswith("/"):
            raise ReferenceSyntaxError(
                "the path must not start with '/': write vault://MOUNT/PATH",
                reference=_shorten(text),
            )
        version = given.get("version")
        if version is not None and not _is_int(version):
            raise ReferenceSyntaxError(
                "?version= must be an integer (-1 is the version before the current one)",
                reference=_shorten(text),
            )
    elif scheme == "aws-sm":
        if "version-stage" in given and "version-id" in given:
            raise ReferenceSyntaxError(
                "give ?version-stage= or ?version-id=, not both", reference=_shorten(text)
            )
    elif scheme == "file" and not path.startswith("/"):
        raise ReferenceSyntaxError(
            "the file path must be absolute: write ref+file:///ABSOLUTE/PATH",
            reference=_shorten(text),
        )


def _check_characters(text: str) -> None:
    if not _FORBIDDEN_CHARS.isdisjoint(text):
        raise ReferenceSyntaxError(
            "a reference cannot contain white space or control characters",
            reference=_shorten(text),
        )


def _is_int(text: str) -> bool:
    digits = text[1:] if text.startswith("-") else text
    return digits.isascii() and digits.isdigit()


def _shorten(text: str, limit: int = 200) -> str:
    """References are not secret, but keep hostile or huge input readable."""
    text = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return text if len(text) <= limit else text[:limit] + "..."
