"""The ``--cache`` file on disk, and when a start uses it (docs/cache.md).

:class:`FallbackCache` is one file and its key: written atomically (the
``--render`` writer), read without following a symlink, and used only where
envwrap left it. The functions below are the start-up policy: a start falls
back to the file only when a store is *unreachable*; a live answer that a secret
is gone or denied deletes it.

**Put back** (docs/SECURITY.md, "Cache"): the write time sealed in the file is
authentic, but an authentic *old* file can be copied back over a newer one.
The kernel keeps a record nobody without root can rewind: the inode's change
time (``st_ctime``), set by every write, rename, link, chmod or chown -- so by
every way a file can be put back. A file envwrap wrote has a change time within
:data:`PUT_BACK_SLACK` of its sealed write time (envwrap checks that right after
writing it, and writes again when a slow disk made it miss); a file whose
change time is later was put there, or changed, by something else and is never
used (and is deleted: it can never become usable again).
"""

from __future__ import annotations

import os
import time

from envwrap import log
from envwrap.cache.key import read_key
from envwrap.cache.sealed import MAX_FILE_BYTES, Unusable, ago, holds, seal, unseal
from envwrap.errors import EX_DATAERR, EX_NOPERM, ConfigError, EnvwrapError
from envwrap.telemetry import audit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from envwrap.backends import Fetched
    from envwrap.config import Settings
    from envwrap.environment import Composed, SecretEnvironment
    from envwrap.refs import Locator

__all__ = [
    "PUT_BACK_SLACK",
    "REFRESH_SHARE",
    "FallbackCache",
    "Missing",
    "configure",
    "configured",
    "discard_after",
    "fall_back",
    "remember_start",
    "revokes",
    "serving_cached",
]

#: with --watch, a confirmed cache is rewritten once this share of --cache-max-age has passed
REFRESH_SHARE = 1 / 8
#: the most a file's inode change time may follow its sealed write time (seconds):
#: the encryption, the write, the fsync and the rename of one save
PUT_BACK_SLACK = 2.0
#: how often a save is tried again when the disk was slower than PUT_BACK_SLACK
SAVE_ATTEMPTS = 3


class Missing(Unusable):
    """There is no cache file (yet): nothing to report beyond that."""


def revokes(error: EnvwrapError) -> bool:
    """Whether a store's answer ends the cache: not found (65) or denied (77).

    Such an answer is the store's word that the program may no longer have the
    secret; a copy of it must not outlive that word (revoked access stays revoked).
    """
    return error.exit_code in (EX_DATAERR, EX_NOPERM)


class FallbackCache:
    """One ``--cache`` file and its key material (never shown in ``repr``)."""

    def __init__(self, path: str, material: bytes, max_age: float) -> None:
        self.path = os.path.abspath(path)
        self._material = material
        self.max_age = max_age
        #: time.time() of the last write by this process (None: not written yet)
        self.saved_at: float | None = None
        #: the program started from this file, and not every store has answered since
        self.serving = False

    def __repr__(self) -> str:
        return f"FallbackCache({self.path!r}, max_age={self.max_age})"

    def save(self, fetched: Mapping[Locator, Fetched]) -> None:
        """Seal ``fetched`` into the file, atomically, mode 0600 (last writer wins).

        Raises :class:`ConfigError` (78) naming ``--cache`` when it cannot be written.
        """
        from envwrap.render import write_secret_file

        late = 0.0
        for _ in range(SAVE_ATTEMPTS):
            now = time.time()
            write_secret_file(self.path, seal(self._material, fetched, written=now),
                              option="--cache", only_if_changed=False)
            self.saved_at = now
            late = self._changed_at(now) - now
            if late <= PUT_BACK_SLACK:
                log.debug("fallback cache written", file=self.path)
                return
        log.warning(f"the fallback cache took {ago(late)} to be written (or the file system's "
                    "clock is ahead of this host's); a start during an outage will not use it",
                    file=self.path)

    def holds_recent(self, fetched: Mapping[Locator, Fetched]) -> bool:
        """Whether the file holds ``fetched`` already, written within the refresh share of
        --cache-max-age: a restart storm with unchanged secrets then reads the file
        instead of writing it (two fsyncs) and never loads cryptography."""
        try:
            blob, _, changed = self._read()
        except Unusable:
            return False
        written = holds(self._material, blob, fetched, now=time.time(),
                        within=self.max_age * REFRESH_SHARE)
        if written is None or changed - written > PUT_BACK_SLACK:
            return False  # a put-back file is rewritten, so that an outage finds a usable one
        self.saved_at = written
        return True

    def load(self, locators: Iterable[Locator]) -> tuple[dict[Locator, Fetched], float]:
        """The cached secrets for ``locators`` and their write time; raises :class:`Unusable`."""
        blob, identity, changed = self._read()
        try:
            fetched, written = unseal(self._material, blob, locators, now=time.time(),
                                      max_age=self.max_age)
            if changed - written > PUT_BACK_SLACK:
                raise Unusable(
                    f"put in place {ago(changed - written)} after envwrap wrote it (copied, "
                    "restored or rolled back): a file is only used where envwrap left it",
                    delete=True)
        except Unusable as why:
            if why.delete:
                self._unlink(identity)
            raise
        return fetched, written

    def serve(self, locators: Iterable[Locator]) -> tuple[dict[Locator, Fetched], float]:
        """:meth:`load`, for a program that starts on what it returns."""
        loaded = self.load(locators)
        self.serving = True
        return loaded

    def went_live(self) -> None:
        """Every store answered: the program no longer runs on cached values."""
        self.serving = False

    def discard(self, reason: str) -> None:
        """Delete the file (if any), saying why (log and audit)."""
        if self._unlink(None):
            log.warning(f"fallback cache deleted: {reason}", file=self.path)
            audit.record("cache", outcome="deleted", file=self.path, detail=reason)

    def _read(self) -> tuple[bytes, tuple[int, int], float]:
        """The file's bytes, its identity (device, inode) and its inode change time."""
        import stat

        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise Missing("there is none yet") from None
        except OSError as exc:
            raise Unusable(f"cannot be opened ({exc.strerror})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise Unusable("not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise Unusable("too large to be an envwrap cache file")
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            # after the reads: a change made while reading counts too
            changed = os.fstat(fd).st_ctime_ns / 1e9
            return b"".join(chunks), (info.st_dev, info.st_ino), changed
        except OSError as exc:
            raise Unusable(f"cannot be read ({exc.strerror})") from None
        finally:
            os.close(fd)

    def _changed_at(self, default: float) -> float:
        try:
            return os.lstat(self.path).st_ctime_ns / 1e9
        except OSError:
            return default

    def _unlink(self, identity: tuple[int, int] | None) -> bool:
        """Remove the file; with ``identity``, only if it is still that file, so that a
        fresh file another envwrap has just put in its place survives."""
        try:
            if identity is not None:
                info = os.lstat(self.path)
                if (info.st_dev, info.st_ino) != identity:
                    return False
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning(f"cannot delete the fallback cache ({exc.strerror})", file=self.path)
            return False
        return True


# -- what a start does with it -------------------------------------------------------
#
# One cache per process, like the audit log: configured by the run mode, used by
# the resolution at start and by the keeper (keeper.py) while watching.

_configured: list[FallbackCache | None] = [None]


def configure(settings: Settings, environ: Mapping[str, str]) -> FallbackCache | None:
    """Read the key and set up ``--cache``; ``None`` without it. Raises ConfigError (78)."""
    _configured[0] = None
    if not settings.cache:
        if settings.cache_key_file:
            raise ConfigError("--cache-key-file needs --cache PATH")
        return None
    cache = FallbackCache(settings.cache, read_key(settings, environ), settings.cache_max_age)
    _configured[0] = cache
    return cache


def configured() -> FallbackCache | None:
    """The ``--cache`` of this process; ``None`` without it."""
    return _configured[0]


def fall_back(secrets: SecretEnvironment, error: EnvwrapError) -> dict[Locator, Fetched]:
    """The cached secrets when ``error`` says a store is unreachable; else raise ``error``.

    Denied (77) and not found (65) are answers, not outages: they delete the
    cache, so that revoked access stays revoked. An unusable file is reported
    once, naming it, and ``error`` (exit 69) stands.
    """
    cache = _configured[0]
    if cache is None:
        raise error
    if revokes(error):
        cache.discard(f"a store answered {audit.outcome_of(error.exit_code)}")
        raise error
    if not error.retryable:
        raise error
    try:
        fetched, written = cache.serve(secrets.locators())
    except Unusable as why:
        deleted = " (deleted)" if why.delete else ""
        log.warning(f"fallback cache not used: {why.reason}{deleted}", file=cache.path)
        if not isinstance(why, Missing):
            audit.record("cache", outcome="refused", file=cache.path, detail=why.reason)
        raise error from None
    log.warning(
        "store unreachable; starting from the fallback cache",
        file=cache.path,
        written=_utc(written),
        reference=error.reference,
    )
    for variable, ref in secrets.uses():
        audit.record(
            "access", variable=variable, store=ref.locator.scheme,
            path=ref.locator.path_with_query, key=ref.key, version=fetched[ref.locator].version,
            outcome="cached",
        )
    audit.record("cache", outcome="served", file=cache.path, detail=f"written {_utc(written)}")
    return fetched


def discard_after(error: EnvwrapError) -> None:
    """A live answer made the start fail with ``error``: delete the cache if it says 65 or 77."""
    cache = _configured[0]
    if cache is not None and not cache.serving and revokes(error):
        cache.discard(f"a store answered {audit.outcome_of(error.exit_code)}")


def remember_start(composed: Composed) -> None:
    """Write the cache after a live start; raises ConfigError (78) if it cannot be written."""
    cache = _configured[0]
    if cache is None or not composed.fetched:
        return
    if cache.serving:
        return  # never refresh the age of values that were not read live
    if not cache.holds_recent(composed.fetched):
        cache.save(composed.fetched)


def serving_cached() -> bool:
    """Whether the program started from the cache and not every store answered since."""
    cache = _configured[0]
    return cache is not None and cache.serving


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
