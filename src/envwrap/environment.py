"""The program's environment: sources, references, ``--from`` imports, resolved values.

:class:`SecretEnvironment` is what every mode works from. Loading it parses the
sources and the references; :meth:`~SecretEnvironment.fetch` reads the stores;
:meth:`~SecretEnvironment.compose` turns what was read into the final
environment -- purely, so that ``--watch`` can compose again after a rotation
and compare. Store code is imported only when some value holds a reference.
"""

from __future__ import annotations

from envwrap import log, sources
from envwrap.backends.registry import credential_names
from envwrap.errors import InvalidValueError, ReferenceSyntaxError, UsageError
from envwrap.near_miss import likely_reference
from envwrap.refs import might_hold_reference

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings anyway
    from collections.abc import Iterable, Mapping

    from envwrap.backends import BackendRegistry, Fetched
    from envwrap.config import Settings
    from envwrap.refs import Locator, Reference, Template

__all__ = [
    "DANGEROUS_NAMES", "Composed", "Resolved", "SecretEnvironment",
    "child_environment", "is_valid_name",
]

#: names that change how a program loads, runs or trusts: --from sets them only with
#: --allow-name (a secret's keys are data; these are code paths and trust anchors)
DANGEROUS_NAMES = frozenset({
    # shells
    "PATH", "IFS", "ENV", "BASH_ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "CDPATH",
    "HOME", "SHELL", "TMPDIR",
    # interpreters and runtimes (PYTHON*, PERL5*, RUBY* and the loader's LD_* are prefixes)
    "NODE_OPTIONS", "NODE_PATH", "NODE_EXTRA_CA_CERTS", "NODE_TLS_REJECT_UNAUTHORIZED",
    "NODE_REPL_EXTERNAL_MODULE", "PERLLIB", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS", "CLASSPATH",
    # the C library and OpenSSL
    "GCONV_PATH", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN", "RES_OPTIONS", "LOCPATH",
    "NLSPATH", "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES",
    # programs other programs start
    "BROWSER", "EDITOR", "VISUAL", "PAGER", "MANPAGER", "LESSOPEN", "LESSCLOSE", "SSH_ASKPASS",
    "SUDO_ASKPASS",
    # proxies and certificate authorities: where traffic goes, and whom it trusts
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "FTP_PROXY", "NO_PROXY", "http_proxy",
    "https_proxy", "all_proxy", "ftp_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE", "VAULT_CACERT", "VAULT_CAPATH",
    "VAULT_ADDR", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
})
DANGEROUS_PREFIXES = (
    "LD_", "DYLD_", "BASH_FUNC_", "ENVWRAP_", "PYTHON", "PERL5", "RUBY", "GIT_", "PIP_",
    "NPM_CONFIG_", "npm_config_",
)
FROM_LABEL = "--from"
#: envwrap's own settings, removed from the child unless --pass-env keeps them
SCRUBBED_PREFIX = "ENVWRAP_"


def is_valid_name(name: str) -> bool:
    """A POSIX shell variable name: letters, digits and '_', not starting with a digit."""
    return (
        bool(name)
        and name.isascii()
        and not name[0].isdigit()
        and name.replace("_", "a").isalnum()
    )


def is_dangerous_name(name: str) -> bool:
    return name in DANGEROUS_NAMES or name.startswith(DANGEROUS_PREFIXES)


def child_environment(
    environment: Mapping[str, str], keep: Iterable[str] = (), scrub: Iterable[str] = ()
) -> dict[str, str]:
    """The environment without envwrap's store credentials and ``ENVWRAP_*`` settings,
    nor the names that match a ``scrub`` glob (``--scrub-env 'AWS_*'``).

    The credentials are the stores' ``credential_names`` (``VAULT_TOKEN``...),
    scrubbed whether or not a reference uses the store. ``keep`` (``--pass-env``)
    names what stays all the same: a name given outright wins over a pattern.
    """
    kept = frozenset(keep)
    scrubbed = credential_names()
    child = {
        name: value
        for name, value in environment.items()
        if name in kept or not (name in scrubbed or name.startswith(SCRUBBED_PREFIX))
    }
    patterns = list(scrub)
    if patterns:
        from fnmatch import fnmatchcase  # only then: it imports re

        for name in [n for n in child if n not in kept]:
            if any(fnmatchcase(name, pattern) for pattern in patterns):
                del child[name]
    return child


class Composed:
    """The result of composing: the final environment and what envwrap put into it."""

    __slots__ = ("contributed", "environment", "fetched", "secret_values", "uses")

    def __init__(
        self,
        environment: dict[str, str],
        contributed: list[str],
        secret_values: list[str],
        fetched: dict[Locator, Fetched] | None = None,
        uses: list[tuple[str, Reference]] | None = None,
    ) -> None:
        #: every variable the program gets (before credential scrubbing)
        self.environment = environment
        #: the names envwrap set: from .env files, references and --from, in order
        self.contributed = contributed
        #: every resolved value (for --mask and redaction)
        self.secret_values = secret_values
        #: the secrets it was composed from, one per locator in use (for --cache)
        self.fetched = fetched or {}
        #: (variable, reference) for every use of a secret (for /metrics)
        self.uses = uses or []


class SecretEnvironment:
    """Sources and references of one run; see the module docstring."""

    def __init__(
        self,
        base: dict[str, str],
        dotenv_names: list[str],
        templates: dict[str, Template],
        imports: list[Reference],
        *,
        override: bool = False,
        allowed_names: frozenset[str] = frozenset(),
    ) -> None:
        self.base = base
        self.dotenv_names = dotenv_names
        self.templates = templates
        self.imports = imports
        self.override = override
        self.allowed_names = allowed_names

    @classmethod
    def load(cls, settings: Settings, environ: Mapping[str, str]) -> SecretEnvironment:
        """Read the ``.env`` files and parse every reference; no store is contacted.

        Raises ConfigError (78) for a bad ``.env`` file and ReferenceSyntaxError
        (64) for a malformed reference, naming the variable.
        """
        dotenv = sources.load_dotenv_files(
            sources.dotenv_files(
                settings.env_file, disabled=settings.no_env_file, folder=settings.start_folder
            ),
            environ,
        )
        base = sources.merge(environ, dotenv, override=settings.override)
        templates = parse_templates(base)
        warn_near_misses(base, templates)
        imports = [_parse_import(text) for text in settings.from_]
        return cls(
            base,
            list(dotenv),
            templates,
            imports,
            override=settings.override,
            allowed_names=frozenset(settings.allow_name),
        )

    @property
    def has_references(self) -> bool:
        return bool(self.templates or self.imports)

    def locators(self) -> list[Locator]:
        """Every distinct secret, each once, in first-use order."""
        found: dict[Locator, None] = {}
        for template in self.templates.values():
            for ref in template.references:
                found.setdefault(ref.locator)
        for ref in self.imports:
            found.setdefault(ref.locator)
        return list(found)

    def describe(self, locator: Locator) -> tuple[str | None, str]:
        """The first variable and reference that use ``locator``, for messages."""
        for name, template in self.templates.items():
            for ref in template.references:
                if ref.locator == locator:
                    return name, ref.text
        for ref in self.imports:
            if ref.locator == locator:
                return FROM_LABEL, ref.text
        return None, str(locator)

    def uses(self) -> list[tuple[str, Reference]]:
        """(variable, reference) pairs, one per use, for tables and audit records."""
        pairs = [(name, ref) for name, t in self.templates.items() for ref in t.references]
        pairs.extend((FROM_LABEL, ref) for ref in self.imports)
        return pairs

    def fetch(
        self, registry: BackendRegistry, *, timeout: float, locators: list[Locator] | None = None
    ) -> dict[Locator, Fetched]:
        from envwrap.resolve import fetch_all

        wanted = self.locators() if locators is None else locators
        return fetch_all(wanted, registry, timeout=timeout, describe=self.describe)

    def compose(self, fetched: Mapping[Locator, Fetched]) -> Composed:
        """The final environment from what was fetched; pure.

        Raises NotFoundError / InvalidValueError (65) naming the variable and the
        reference for a missing key, a bad --from key, or a refused name.
        """
        environment = dict(self.base)
        secret_values: list[str] = []
        contributed = list(self.dotenv_names)
        if self.templates:
            from envwrap.resolve import render

            rendered, pieces = render(self.templates, fetched)
            for name, secret in rendered.items():
                environment[name] = secret.reveal()
                secret_values.append(secret.reveal())
                contributed.append(name)
            secret_values.extend(piece.reveal() for piece in pieces)
        for ref in self.imports:
            for name, value in self._imported(ref, fetched).items():
                secret_values.append(value)
                if name in environment and not self.override:
                    continue  # the explicit environment wins over --from
                environment[name] = value
                contributed.append(name)
        used = {locator: fetched[locator] for locator in self.locators()}
        return Composed(environment, list(dict.fromkeys(contributed)), secret_values, used,
                        self.uses())

    def _imported(self, ref: Reference, fetched: Mapping[Locator, Fetched]) -> dict[str, str]:
        import json

        from envwrap.resolve import select
        from envwrap.secret import Secret

        data = fetched[ref.locator].data
        document: object = data
        if ref.key is not None or isinstance(data, str):
            try:
                document = json.loads(select(data, ref.key))
            except ValueError:
                document = None
        if not isinstance(document, dict):
            raise InvalidValueError(
                "--from needs a key-value secret (a JSON object)",
                variable=FROM_LABEL,
                reference=ref.text,
            )
        imported: dict[str, str] = {}
        for key, value in document.items():
            if not is_valid_name(key):
                raise InvalidValueError(
                    f"the secret's key {_printable(key)!r} is not a valid variable name",
                    variable=FROM_LABEL,
                    reference=ref.text,
                )
            if is_dangerous_name(key) and key not in self.allowed_names:
                raise InvalidValueError(
                    f"the secret's key {key!r} would change how programs load",
                    variable=FROM_LABEL,
                    reference=ref.text,
                    hint=f"pass --allow-name {key} if this is intended",
                )
            text = value if isinstance(value, str) else json.dumps(value)
            imported[key] = Secret(text).reveal()
        return imported


def parse_templates(environment: Mapping[str, str]) -> dict[str, Template]:
    """The variables whose values hold references, parsed; others are skipped cheaply."""
    candidates = {n: v for n, v in environment.items() if might_hold_reference(v)}
    if not candidates:
        return {}
    from envwrap.refs import parse_value

    templates: dict[str, Template] = {}
    for name, value in candidates.items():
        try:
            template = parse_value(value)
        except ReferenceSyntaxError as err:
            raise err.about(variable=name) from None
        if template is not None:
            templates[name] = template
    return templates


def warn_near_misses(environment: Mapping[str, str], references: Mapping[str, object]) -> None:
    """Warn about each value that looks like a mistyped reference (it stays as it is)."""
    for name, value in environment.items():
        if name in references:
            continue
        meant = likely_reference(value)
        if meant is not None:
            written = value[: value.find(":") + 1]
            log.warning(
                f"{name} looks like a mistyped reference: it starts with {_printable(written)!r}; "
                f"did you mean {meant!r}? The program gets the value as it is"
            )


def _parse_import(text: str) -> Reference:
    from envwrap.refs import parse_reference

    ref = parse_reference(text)
    if ref is None and not text.startswith("ref+"):
        ref = parse_reference("ref+" + text) if "://" in text else None
    if ref is None:
        raise UsageError("--from needs a reference", variable=FROM_LABEL, reference=text)
    return ref


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:80])


class Resolved:
    """An environment loaded and resolved once, with the registry that read it."""

    def __init__(
        self,
        secrets: SecretEnvironment,
        registry: BackendRegistry | None,
        fetched: dict[Locator, Fetched],
        composed: Composed,
        environ: dict[str, str],
    ) -> None:
        #: the process environment envwrap started with (to reload .env from)
        self.environ = environ
        self.secrets = secrets
        self.registry = registry
        self.fetched = fetched
        self.composed = composed
