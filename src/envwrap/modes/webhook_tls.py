"""The webhook's TLS certificate, re-read when its files change.

cert-manager renews the certificate before it expires and the kubelet swaps the
Secret volume's files (a ``..data`` symlink replaced at once), so the files are
checked at each new connection -- two ``stat`` calls -- and a new
:class:`ssl.SSLContext` is built when they differ. A pair that does not load
(a key that does not match its certificate, half of a non-atomic copy) keeps
the previous context serving and is tried again once the files change again.
"""

from __future__ import annotations

import os
import ssl
import threading

from envwrap import log
from envwrap.errors import ConfigError

__all__ = ["Certificates"]

_Stamp = tuple[tuple[int, int, int], ...]


class Certificates:
    """The server-side TLS context for ``cert_file`` and ``key_file``.

    Raises :class:`ConfigError` (78) at construction when the pair cannot be
    loaded: the webhook does not start without a certificate.
    """

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._lock = threading.Lock()
        self._tried = self._stamp()
        try:
            self._context = self._load()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"--tls-cert {cert_file} / --tls-key {key_file}: cannot load the certificate "
                f"and key ({type(exc).__name__}: {getattr(exc, 'strerror', None) or exc})",
                hint="give a PEM certificate chain and its unencrypted PEM private key",
            ) from None
        #: how many times a changed pair was loaded (for tests and the log)
        self.reloads = 0

    def context(self) -> ssl.SSLContext:
        """The context to wrap the next connection with, reloaded if the files changed."""
        stamp = self._stamp()
        if stamp == self._tried:
            return self._context
        with self._lock:
            if stamp == self._tried:
                return self._context
            self._tried = stamp
            try:
                self._context = self._load()
            except (OSError, ssl.SSLError) as exc:
                log.warning(
                    "webhook: the changed certificate files do not load; still serving the "
                    f"previous certificate ({type(exc).__name__})",
                    cert=self.cert_file, key=self.key_file,
                )
                return self._context
            self.reloads += 1
            log.info("webhook: certificate reloaded", cert=self.cert_file)
            return self._context

    def _stamp(self) -> _Stamp:
        stamps = []
        for path in (self.cert_file, self.key_file):
            try:
                info = os.stat(path)
            except OSError:
                stamps.append((0, 0, 0))
                continue
            stamps.append((info.st_ino, info.st_mtime_ns, info.st_size))
        return tuple(stamps)

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        return context
