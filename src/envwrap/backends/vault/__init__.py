"""``vault://MOUNT/PATH[?version=N][#KEY]``: HashiCorp Vault and OpenBao.

The package along its seams:

* :mod:`.settings` -- the Vault CLI's variables (address, TLS, proxy,
  timeout, login method), read once from the merged environment;
* :mod:`.auth` -- the login (token, token file, AppRole, Kubernetes) shared by
  the reader threads, token renewal and re-login, revoking envwrap's own token;
* :mod:`.transport` -- JSON over ``http.client``: a pool of kept-alive
  connections, TLS, proxy, redirects and size limits; the reading of replies;
* :mod:`.reply` -- a reply's status line and headers, read without the email package;
* :mod:`.errors` -- the one mapping of error replies and the transport's exceptions;
* :mod:`.mounts` -- which mount a path is on, KV v1 or v2;
* :mod:`.backend` -- :class:`VaultBackend`: reads, versions, leases.

envwrap's credentials never reach the child: ``VAULT_TOKEN``,
``VAULT_ROLE_ID`` and ``VAULT_SECRET_ID`` are the backend's
``credential_names``.
"""

from __future__ import annotations

from envwrap.backends.vault.backend import VaultBackend
from envwrap.backends.vault.errors import STATUS_ERRORS, map_error
from envwrap.backends.vault.settings import Settings, read_settings

__all__ = ["STATUS_ERRORS", "Settings", "VaultBackend", "map_error", "read_settings"]
