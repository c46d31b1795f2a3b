"""The sealed ``--cache`` file: key derivation, seal and open (docs/cache.md).

Pure functions on bytes: no file, no clock of their own, no global state.

File format (version 1; integers big-endian)::

    offset  size  field
    0       7     magic b"EWCACHE"
    7       1     format version
    8       8     write time, milliseconds since the Unix epoch
    16      16    HKDF salt, random per write
    32      12    AES-GCM nonce, random per write
    44      32    SHA-256 of the sorted locators (the reference set)
    76      ...   AES-256-GCM ciphertext of the payload, then its 16-byte tag
    end-32  32    check: HMAC-SHA256 of everything before it and of the payload

The AES key is HKDF-SHA256(key material, salt, info ``b"envwrap cache v1"``);
the whole header is the associated data, so the version, the write time and
the reference set are authenticated with the secrets: nobody without the key
can make a file look younger or move it to other references. The payload is
JSON (the secrets sorted by locator) padded with spaces to a multiple of 256
bytes, so that the file's size says little about the secrets' lengths. The file
holds no plaintext value, no encoding of one, and no key.

The check is keyed too (HKDF info ``b"envwrap cache check v1"``, the same
per-file salt): without the key it says nothing, not even whether two files
hold the same secrets. It lets a start whose secrets did not change see that
the file already holds them, whole and unaltered, with the standard library
alone -- without loading cryptography, whose compiled module costs several
milliseconds. Reading a file for use verifies it as well.
"""

from __future__ import annotations

import os

from envwrap.errors import BackendMissingError, ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

    from envwrap.backends import Fetched
    from envwrap.refs import Locator

__all__ = [
    "FUTURE_SKEW",
    "MAX_FILE_BYTES",
    "Unusable",
    "ago",
    "hkdf_sha256",
    "holds",
    "reference_digest",
    "seal",
    "unseal",
]

MAGIC = b"EWCACHE"
FORMAT_VERSION = 1
HEADER_FORMAT = ">7sBQ16s12s32s"
HEADER_SIZE = 76
CHECK_SIZE = 32
TAG_SIZE = 16
PADDING = 256
MAX_FILE_BYTES = 64 * 1024 * 1024
#: a file written further than this in the future (clock skew between nodes) is not used
FUTURE_SKEW = 300.0
_INFO = b"envwrap cache v1"
_CHECK_INFO = b"envwrap cache check v1"


class Unusable(Exception):
    """Why a cache file cannot be used; ``delete`` when it must also be removed."""

    def __init__(self, reason: str, *, delete: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delete = delete


def reference_digest(locators: Iterable[Locator]) -> bytes:
    """SHA-256 of the sorted, de-duplicated locators: the identity of a reference set."""
    import hashlib
    import json

    canonical = sorted({(loc.scheme, loc.path, loc.params) for loc in locators})
    text = json.dumps([[s, p, [list(kv) for kv in q]] for s, p, q in canonical],
                      separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).digest()


def hkdf_sha256(material: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869), extract then expand.

    Written on the standard library's HMAC, which every store client has loaded
    already, instead of importing cryptography's KDF modules on the start-up
    path; a test checks it against cryptography's ``HKDF``.
    """
    import hashlib
    import hmac

    prk = hmac.new(salt, material, hashlib.sha256).digest()
    blocks, block, counter = b"", b"", 1
    while len(blocks) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        blocks += block
        counter += 1
    return blocks[:length]


def _primitives() -> tuple[Any, type[Exception]]:
    """(AESGCM, InvalidTag), imported on first use.

    AESGCM is taken from cryptography's compiled module, which its public
    ``ciphers.aead`` module only re-exports: that skips the pure-Python cipher
    modules (~3 ms of start-up). Should a release move it, the public import
    is used.
    """
    try:
        from cryptography.exceptions import InvalidTag

        try:
            from cryptography.hazmat.bindings._rust import openssl as compiled

            aesgcm: Any = compiled.aead.AESGCM
        except (ImportError, AttributeError):
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM as aesgcm
    except ImportError:
        raise BackendMissingError(
            "--cache needs the 'cryptography' package", hint="pip install 'envwrap-secrets[cache]'"
        ) from None
    return aesgcm, InvalidTag


def _payload(fetched: Mapping[Locator, Fetched]) -> bytes:
    """The plaintext: every secret with its version, sorted by locator, padded."""
    import json

    entries = [
        [loc.scheme, loc.path, [list(kv) for kv in loc.params], item.data, item.version]
        for loc, item in sorted(fetched.items(), key=lambda e: (e[0].scheme, e[0].path,
                                                                e[0].params))
    ]
    try:
        payload = json.dumps({"secrets": entries}, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        raise ConfigError("--cache: a secret is not JSON data and cannot be cached") from None
    return payload + b" " * (-len(payload) % PADDING)


def _check(material: bytes, salt: bytes, sealed: bytes, payload: bytes) -> bytes:
    import hashlib
    import hmac

    key = hkdf_sha256(material, salt, _CHECK_INFO)
    return hmac.new(key, sealed + payload, hashlib.sha256).digest()


def seal(material: bytes, fetched: Mapping[Locator, Fetched], *, written: float) -> bytes:
    """The cache file's bytes for ``fetched`` (every locator of the reference set)."""
    import struct

    aesgcm, _ = _primitives()
    payload = _payload(fetched)
    salt, nonce = os.urandom(16), os.urandom(12)
    header = struct.pack(HEADER_FORMAT, MAGIC, FORMAT_VERSION, int(written * 1000), salt, nonce,
                         reference_digest(fetched))
    key = hkdf_sha256(material, salt, _INFO)
    sealed: bytes = header + aesgcm(key).encrypt(nonce, payload, header)
    return sealed + _check(material, salt, sealed, payload)


def holds(
    material: bytes, blob: bytes, fetched: Mapping[Locator, Fetched], *, now: float,
    within: float,
) -> float | None:
    """The write time of ``blob`` if it holds exactly ``fetched`` and was written less
    than ``within`` seconds ago; else ``None``. Standard library only (the check)."""
    import hmac
    import struct

    if len(blob) < HEADER_SIZE + TAG_SIZE + CHECK_SIZE:
        return None
    magic, version, written_ms, salt, _, digest = struct.unpack_from(HEADER_FORMAT, blob)
    written = written_ms / 1000
    if (magic, version) != (MAGIC, FORMAT_VERSION) or not -FUTURE_SKEW <= now - written < within:
        return None
    if digest != reference_digest(fetched):
        return None
    expected = _check(material, salt, blob[:-CHECK_SIZE], _payload(fetched))
    return written if hmac.compare_digest(blob[-CHECK_SIZE:], expected) else None


def unseal(
    material: bytes, blob: bytes, locators: Iterable[Locator], *, now: float, max_age: float
) -> tuple[dict[Locator, Fetched], float]:
    """The secrets in ``blob`` and their write time; raises :class:`Unusable` with the reason.

    Checked in this order: the format, the reference set, the authentication
    tag (a wrong key and an altered byte look the same), then the age -- only
    an authentic file can be judged expired (and deleted for it).
    """
    import hmac
    import struct

    if len(blob) < HEADER_SIZE + TAG_SIZE + CHECK_SIZE:
        raise Unusable("truncated, or not an envwrap cache file")
    magic, version, written_ms, salt, nonce, digest = struct.unpack_from(HEADER_FORMAT, blob)
    if magic != MAGIC:
        raise Unusable("not an envwrap cache file")
    if version != FORMAT_VERSION:
        raise Unusable(f"format version {version} is not one this envwrap reads")
    wanted = list(locators)
    if digest != reference_digest(wanted):
        raise Unusable("written for other references")
    aesgcm, invalid_tag = _primitives()
    header, sealed = blob[:HEADER_SIZE], blob[:-CHECK_SIZE]
    try:
        key = hkdf_sha256(material, salt, _INFO)
        payload = aesgcm(key).decrypt(nonce, sealed[HEADER_SIZE:], header)
    except invalid_tag:
        raise Unusable("cannot be decrypted: a wrong key, or the file was altered") from None
    if not hmac.compare_digest(blob[-CHECK_SIZE:], _check(material, salt, sealed, payload)):
        raise Unusable("its check does not match: the file was altered")
    written = written_ms / 1000
    age = now - written
    if age > max_age:
        raise Unusable(f"expired: written {ago(age)} ago, over --cache-max-age", delete=True)
    if age < -FUTURE_SKEW:
        raise Unusable("written in the future: check the clocks")
    return _entries(payload, wanted), written


def _entries(payload: bytes, wanted: list[Locator]) -> dict[Locator, Fetched]:
    import json

    from envwrap.backends import Fetched
    from envwrap.refs import Locator

    try:
        entries = json.loads(payload)["secrets"]
        fetched = {
            Locator(scheme, path, tuple((str(k), str(v)) for k, v in params)):
                Fetched(data, None if version is None else str(version))
            for scheme, path, params, data, version in entries
        }
    except (ValueError, KeyError, TypeError):
        raise Unusable("its content is not what this envwrap writes") from None
    if set(fetched) != set(wanted) or not all(
        isinstance(item.data, str | dict) for item in fetched.values()
    ):
        raise Unusable("its content is not what this envwrap writes")
    return fetched


def ago(seconds: float) -> str:
    if seconds >= 7200:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 120:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"
