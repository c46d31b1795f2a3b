"""Which backend serves each scheme, built once per scheme, and reading across stores.

Built-in backends are registered in the ``envwrap.backends`` entry-point group
like third-party ones. envwrap maps the built-in schemes to their classes
directly, so that start-up scans the installed entry points only when a
reference names a scheme envwrap does not ship -- and knows what a built-in
store needs (its pip extra, its credential variables) without importing it.
"""

from __future__ import annotations

from envwrap.backends.fanout import by_scheme, run_all
from envwrap.errors import BackendMissingError, EnvwrapError, StoreUnavailableError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings anyway
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any, TypeVar

    from envwrap.backends.contract import Backend, Fetched
    from envwrap.refs import Locator

    T = TypeVar("T")

__all__ = ["BUILTIN_BACKENDS", "BackendRegistry", "Builtin", "NoAnswer", "credential_names"]

ENTRY_POINT_GROUP = "envwrap.backends"


class NoAnswer(StoreUnavailableError):
    """A store that had not answered when the deadline passed (it may answer, slowly)."""


class Builtin:
    """What envwrap knows of a built-in backend before importing its code."""

    __slots__ = ("class_name", "credential_names", "extra", "module")

    def __init__(self, module: str, class_name: str, extra: str | None = None,
                 credential_names: Iterable[str] = ()) -> None:
        self.module = module
        self.class_name = class_name
        #: the pip extra that installs its dependencies
        self.extra = extra
        #: the class's ``credential_names``, here so that they are scrubbed even
        #: when no reference loads the store's code (a test keeps the two equal)
        self.credential_names = frozenset(credential_names)


BUILTIN_BACKENDS: dict[str, Builtin] = {
    "vault": Builtin("envwrap.backends.vault", "VaultBackend", "vault",
                     ("VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID")),
    "aws-sm": Builtin("envwrap.backends.aws_sm", "SecretsManagerBackend", "aws"),
    "aws-ssm": Builtin("envwrap.backends.aws_ssm", "ParameterStoreBackend", "aws"),
    "file": Builtin("envwrap.backends.file", "FileBackend"),
    "memory": Builtin("envwrap.backends.memory", "MemoryBackend"),
}

#: credential names of plug-in backends loaded in this process
_plugin_credentials: set[str] = set()


def credential_names() -> frozenset[str]:
    """Every variable that holds envwrap's own store credentials: the built-in
    stores' and those of each plug-in store loaded so far."""
    names = {name for builtin in BUILTIN_BACKENDS.values() for name in builtin.credential_names}
    return frozenset(names | _plugin_credentials)


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

    def backends(self) -> dict[str, Backend]:
        """The backends used so far, by scheme."""
        return dict(self._instances)

    def read_many(
        self, locators: Iterable[Locator], *, deadline: float | None = None
    ) -> dict[Locator, Fetched | EnvwrapError]:
        """Read each distinct locator once, every store at the same time.

        A store that has not answered by ``deadline`` (a :func:`time.monotonic`
        time) is left behind: its locators get a :class:`NoAnswer`.
        So does every locator of a store whose backend cannot be built (an
        unknown scheme, a missing ``VAULT_ADDR``), with that error.
        """
        return self._per_store(locators, lambda backend, group: backend.read_many(group),
                               deadline)

    def probe_many(
        self, locators: Iterable[Locator], *, deadline: float | None = None
    ) -> dict[Locator, str | Fetched | EnvwrapError | None]:
        """``Backend.probe_many`` for each distinct locator, every store at the same time."""
        return self._per_store(locators, lambda backend, group: backend.probe_many(group),
                               deadline)

    def close(self) -> None:
        for backend in self._instances.values():
            backend.close()
        self._instances.clear()

    def _per_store(
        self,
        locators: Iterable[Locator],
        call: Callable[[Backend, Sequence[Locator]], Sequence[T | EnvwrapError]],
        deadline: float | None,
    ) -> dict[Locator, T | EnvwrapError]:
        groups = by_scheme(locators)
        results: dict[Locator, T | EnvwrapError] = {}
        backends: dict[str, Backend] = {}
        for scheme, group in groups.items():
            try:
                backends[scheme] = self.get(scheme)
            except EnvwrapError as err:
                results.update(dict.fromkeys(group, err))

        def one_store(scheme: str) -> dict[Locator, T | EnvwrapError]:
            backend = backends[scheme]
            outcomes: dict[Locator, T | EnvwrapError] = {}
            valid: list[Locator] = []
            for locator in groups[scheme]:
                try:
                    backend.validate(locator)
                except EnvwrapError as err:
                    outcomes[locator] = err
                    continue
                valid.append(locator)
            if valid:
                outcomes.update(zip(valid, call(backend, valid), strict=True))
            return outcomes

        schemes = list(backends)

        def overdue(index: int) -> dict[Locator, T | EnvwrapError]:
            late = NoAnswer(f"the {schemes[index]}:// store did not answer in time")
            return dict.fromkeys(groups[schemes[index]], late)

        jobs = [_bound(one_store, scheme) for scheme in schemes]
        for outcomes in run_all(jobs, limit=len(jobs), name="store", deadline=deadline,
                                overdue=overdue):
            results.update(outcomes)
        return {locator: results[locator] for group in groups.values() for locator in group}

    def _load(self, scheme: str) -> type[Backend]:
        builtin = BUILTIN_BACKENDS.get(scheme)
        if builtin is not None:
            return _import_builtin(scheme, builtin)
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
        from envwrap.backends.contract import Backend

        if not (isinstance(loaded, type) and issubclass(loaded, Backend)):
            raise BackendMissingError(
                f"the plug-in for {scheme!r} ({entry_point.value}) is not an envwrap Backend"
            )
        _plugin_credentials.update(loaded.credential_names)
        return loaded

    def _plugin_entry_points(self) -> dict[str, Any]:
        if self._plugins is None:
            from importlib.metadata import entry_points

            self._plugins = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return self._plugins


def _import_builtin(scheme: str, builtin: Builtin) -> type[Backend]:
    import importlib

    try:
        module = importlib.import_module(builtin.module)
    except ImportError as exc:
        if builtin.extra is None:
            raise
        raise BackendMissingError(
            f"the {scheme}:// backend needs packages that are not installed "
            f"({exc.name or 'unknown'})",
            hint=f"pip install 'envwrap-secrets[{builtin.extra}]'",
        ) from exc
    backend: type[Backend] = getattr(module, builtin.class_name)
    return backend


def _bound(call: Callable[[str], T], scheme: str) -> Callable[[], T]:
    return lambda: call(scheme)
