"""The backend plug-in interface and registry (DESIGN §1).

A backend reads secrets from one kind of store. It knows nothing about
variables, processes or supervision. Its whole interface:

* ``read(locator) -> Fetched``: read one secret; raise an :mod:`envwrap.errors`
  error (never an SDK exception) when it cannot.
* ``read_many(locators) -> list[Fetched | EnvwrapError]``: read several at once.
  The default runs ``read`` concurrently; a store with a batch API overrides it.
* ``probe(locator) -> str | None`` and ``probe_many`` (optional): a cheap change
  check for ``--watch`` -- the current version id without the value, or ``None``
  when the store has none, in which case the watcher re-reads and compares.
* ``close()``.

Backends are constructed with the merged environment (process environment plus
``.env``) so that store settings such as ``VAULT_ADDR`` may live in ``.env``.

Built-in backends are registered in the ``envwrap.backends`` entry-point group
like third-party ones. envwrap maps the built-in schemes to their classes
directly, so that start-up scans the installed entry points only when a
reference names a scheme envwrap does not ship.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from envwrap.errors import BackendMissingError, EnvwrapError

if TYPE_CHECKING:  # kept off the start-up path
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, ClassVar, TypeVar

    from envwrap.refs import Locator

    T = TypeVar("T")

__all__ = [
    "Backend",
    "BackendRegistry",
    "Fetched",
    "Lease",
]

ENTRY_POINT_GROUP = "envwrap.backends"

#: scheme -> (module, class name, pip extra that installs its dependencies)
BUILTIN_BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "vault": ("envwrap.backends.vault", "VaultBackend", "vault"),
    "aws-sm": ("envwrap.backends.aws_sm", "SecretsManagerBackend", "aws"),
    "aws-ssm": ("envwrap.backends.aws_ssm", "ParameterStoreBackend", "aws"),
    "file": ("envwrap.backends.file", "FileBackend", None),
    "memory": ("envwrap.backends.memory", "MemoryBackend", None),
}


class Lease:
    """A lease that came with a dynamic secret (Vault ``database/creds/ROLE``)."""

    __slots__ = ("duration", "lease_id", "renewable")

    def __init__(self, lease_id: str, duration: int, renewable: bool) -> None:
        self.lease_id = lease_id
        self.duration = duration
        self.renewable = renewable

    def __repr__(self) -> str:
        return f"Lease({self.lease_id!r}, duration={self.duration}, renewable={self.renewable})"


class Fetched:
    """One secret as read from its store.

    ``data`` is the secret: text, or a mapping for key-value stores (Vault KV).
    It never appears in ``repr``. ``version`` is the store's version id (shown by
    ``check`` and the audit log); ``None`` when the store has no versions.
    """

    __slots__ = ("data", "lease", "version")

    def __init__(
        self,
        data: str | Mapping[str, Any],
        version: str | None = None,
        lease: Lease | None = None,
    ) -> None:
        self.data = data
        self.version = version
        self.lease = lease

    def __repr__(self) -> str:
        return f"Fetched(data=*****, version={self.version!r}, lease={self.lease!r})"

    def same_content(self, other: Fetched) -> bool:
        return self.data == other.data


class Backend:
    """Base class of every backend; see the module docstring for the contract."""

    #: the scheme this backend serves, e.g. ``"vault"``
    scheme: ClassVar[str] = ""
    #: how many reads may run at once in the default ``read_many``
    max_concurrency: ClassVar[int] = 16

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def read(self, locator: Locator) -> Fetched:
        raise NotImplementedError

    def read_many(self, locators: Sequence[Locator]) -> list[Fetched | EnvwrapError]:
        return _concurrently(self.read, locators, self.max_concurrency, self.scheme)

    def probe(self, locator: Locator) -> str | None:
        """The current version id of ``locator``, cheaply; ``None``: re-read to compare.

        Raises an :mod:`envwrap.errors` error like ``read`` does.
        """
        return None

    def probe_many(self, locators: Sequence[Locator]) -> list[str | EnvwrapError | None]:
        """``probe`` for several locators, concurrently; a store with a batch API overrides it."""
        return _concurrently(self.probe, locators, self.max_concurrency, self.scheme)

    def close(self) -> None:
        """Release connections; called once when envwrap is done with the store."""


def _concurrently(
    call: Callable[[Locator], T], locators: Sequence[Locator], limit: int, scheme: str
) -> list[T | EnvwrapError]:
    """``call`` each locator, in threads; an envwrap error becomes that locator's result."""

    def capture(locator: Locator) -> T | EnvwrapError:
        try:
            return call(locator)
        except EnvwrapError as err:
            return err

    if len(locators) <= 1:
        return [capture(locator) for locator in locators]
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(limit, len(locators)))
    with ThreadPoolExecutor(workers, thread_name_prefix=f"envwrap-{scheme}") as pool:
        return list(pool.map(capture, locators))


class BackendRegistry:
    """Finds and builds the backend for each scheme, once per scheme."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._instances: dict[str, Backend] = {}
        self._plugins: dict[str, Any] | None = None

    def get(self, scheme: str) -> Backend:
        backend = self._instances.get(scheme)
        if backend is None:
            backend = self._load(scheme)(self._environ)
            self._instances[scheme] = backend
        return backend

    def loaded(self, scheme: str) -> bool:
        """Whether the backend of ``scheme`` was used (``get`` would not create it)."""
        return scheme in self._instances

    def close(self) -> None:
        for backend in self._instances.values():
            backend.close()
        self._instances.clear()

    def _load(self, scheme: str) -> type[Backend]:
        builtin = BUILTIN_BACKENDS.get(scheme)
        if builtin is not None:
            module_name, class_name, extra = builtin
            return _import_builtin(scheme, module_name, class_name, extra)
        entry_point = self._plugin_entry_points().get(scheme)
        if entry_point is None:
            raise BackendMissingError(
                f"no backend is installed for the scheme {scheme!r}",
                hint=f"install a plug-in that registers {scheme!r} in the "
                f"{ENTRY_POINT_GROUP!r} entry-point group",
            )
        try:
            loaded = entry_point.load()
        except Exception as exc:  # a broken plug-in is reported when it is used
            raise BackendMissingError(
                f"the backend plug-in for {scheme!r} ({entry_point.value}) failed to load: "
                f"{type(exc).__name__}",
            ) from exc
        if not (isinstance(loaded, type) and issubclass(loaded, Backend)):
            raise BackendMissingError(
                f"the plug-in for {scheme!r} ({entry_point.value}) is not an envwrap Backend"
            )
        return loaded

    def _plugin_entry_points(self) -> dict[str, Any]:
        if self._plugins is None:
            from importlib.metadata import entry_points

            self._plugins = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return self._plugins


def _import_builtin(
    scheme: str, module_name: str, class_name: str, extra: str | None
) -> type[Backend]:
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is None:
            raise
        raise BackendMissingError(
            f"the {scheme}:// backend needs packages that are not installed "
            f"({exc.name or 'unknown'})",
            hint=f"pip install 'envwrap-secrets[{extra}]'",
        ) from exc
    backend: type[Backend] = getattr(module, class_name)
    return backend
