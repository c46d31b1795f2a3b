"""Settings from the command line and ``ENVWRAP_*`` variables (docs/reference.md).

One table of options drives the parser, the ``ENVWRAP_*`` twins and ``--help``.
The parser is hand-written rather than :mod:`argparse` because it sits on the
start-up path of every run, and argparse alone costs a third of the time a bare
interpreter needs to start.
"""

from __future__ import annotations

import os

from envwrap.errors import ConfigError, UsageError
from envwrap.values import parse_duration, parse_rate, parse_signal, parse_wait

__all__ = [
    "COMMANDS", "FORMATS", "OPTIONS", "Option", "Settings", "make_paths_absolute", "parse_args",
]

COMMANDS = ("run", "check", "export", "sidecar", "webhook", "install", "import", "completion")
#: the commands that take words of their own (a folder, a shell) rather than a program
_POSITIONAL = {"install": "DIR", "completion": "SHELL"}
#: --format, per command: its choices, the first being the default
FORMATS = {"check": ("table", "json"), "export": ("dotenv", "json", "shell")}
HELP_FLAGS = ("-h", "--help")
ENV_PREFIX = "ENVWRAP_"
_ALL = frozenset(COMMANDS)
_RUN = frozenset({"run"})
_WATCHING = frozenset({"run", "sidecar"})
_WEBHOOK = frozenset({"webhook"})
_IMPORT = frozenset({"import"})
#: the commands that resolve references, and those that read .env files
_RESOLVING = frozenset({"run", "check", "export", "sidecar"})
_READING = _RESOLVING | _IMPORT
_LOGGING = _ALL - {"completion"}


class Option:
    __slots__ = ("choices", "commands", "default", "dest", "flag", "help", "kind", "metavar")

    def __init__(
        self,
        flag: str,
        kind: str,
        help: str,
        *,
        default: object = None,
        metavar: str = "",
        choices: tuple[str, ...] = (),
        commands: frozenset[str] = _ALL,
    ) -> None:
        self.flag = flag
        self.dest = flag[2:].replace("-", "_")
        self.kind = kind  # "flag", "value" or "list"
        self.help = help
        self.default = default
        self.metavar = metavar
        self.choices = choices
        self.commands = commands

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.dest.upper()


OPTIONS: tuple[Option, ...] = (
    Option("--env-file", "list", "read this .env file (repeatable; later files win)",
           metavar="PATH", commands=_READING),
    Option("--no-env-file", "flag", "read no .env file, not even ./.env", commands=_READING),
    Option("--override", "flag", ".env files and --from win over the process environment",
           commands=_RESOLVING),
    Option("--from", "list", "import every top-level key of one secret as a variable "
           "(repeatable)", metavar="REF", commands=_RESOLVING),
    Option("--allow-name", "list", "let --from set a name that changes how programs load "
           "(PATH, LD_*...)", metavar="NAME", commands=_RESOLVING),
    Option("--pass-env", "list", "keep this credential (VAULT_TOKEN, ENVWRAP_...) for the "
           "program", metavar="NAME", commands=_RESOLVING),
    Option("--scrub-env", "list", "drop variables matching this glob for the program ('AWS_*')",
           metavar="GLOB", commands=_RUN),
    Option("--start-timeout", "value", "how long to retry an unreachable store at start",
           default="30s", metavar="DURATION", commands=_RESOLVING),
    Option("--log-level", "value", "how much to say on stderr", default="warning",
           choices=("debug", "info", "warning", "error"), metavar="LEVEL", commands=_LOGGING),
    Option("--log-format", "value", "text or JSON lines", default="text",
           choices=("text", "json"), metavar="FORMAT", commands=_LOGGING),
    Option("--debug", "flag", "add tracebacks to errors (never values)", commands=_LOGGING),
    Option("--audit-log", "value", "one JSON line per access, rotation, restart, signal "
           "('-': stderr)", metavar="PATH", commands=_RESOLVING | _WEBHOOK | _IMPORT),
    Option("--require-example", "value", "fail unless every key of this example file is set",
           metavar="PATH", commands=_RUN),
    Option("--example", "value", "fail unless every key of this example file is set",
           metavar="PATH", commands=frozenset({"check"})),
    Option("--format", "value", "output format (check: table, json; export: dotenv, json, "
           "shell)", choices=tuple(dict.fromkeys(c for f in FORMATS.values() for c in f)),
           metavar="FORMAT", commands=frozenset(FORMATS)),
    Option("--init", "flag", "stay the parent: forward signals, reap zombies (as tini does)",
           commands=_RUN),
    Option("--watch", "flag", "stay the parent and apply secret rotations", commands=_RUN),
    Option("--interval", "value", "how often to poll the stores", default="60s",
           metavar="DURATION", commands=_WATCHING),
    Option("--splay", "value", "wait a random time up to this before applying a change",
           default="0s", metavar="DURATION", commands=_WATCHING),
    Option("--on-change", "value", "what a change does", default="restart",
           choices=("restart", "signal", "exit", "handoff"), metavar="ACTION", commands=_RUN),
    Option("--reload-signal", "value", "the signal for --on-change signal and the sidecar",
           default="SIGHUP", metavar="SIGNAL", commands=_WATCHING),
    Option("--kill-signal", "value", "the signal that asks the child to stop",
           default="SIGTERM", metavar="SIGNAL", commands=_RUN),
    Option("--kill-timeout", "value", "how long the child may take to stop before SIGKILL",
           default="10s", metavar="DURATION", commands=_RUN),
    Option("--render", "list", "write the resolved secrets to this file, mode 0600 "
           "(repeatable)", metavar="PATH", commands=_WATCHING),
    Option("--render-format", "value", "--render format (auto: by extension)",
           default="auto", choices=("auto", "dotenv", "json"), metavar="FORMAT",
           commands=_WATCHING),
    Option("--mask", "flag", "replace secret values in the child's stdout and stderr",
           commands=_RUN),
    Option("--target-pid-file", "value", "the process to signal: its pid file",
           metavar="FILE", commands=frozenset({"sidecar"})),
    Option("--target-name", "value", "the process to signal: its name", metavar="NAME",
           commands=frozenset({"sidecar"})),
    Option("--listen", "list", "bind HOST:PORT, :PORT or unix:PATH (run: fd 3, 4...; webhook: "
           "HTTPS)", metavar="ADDR", commands=_RUN | _WEBHOOK),
    Option("--ready", "value", "when ready: notify, http(s)://URL, tcp://HOST:PORT, log:REGEX, "
           "DURATION", metavar="CHECK", commands=_RUN),
    Option("--ready-timeout", "value", "how long a generation may take to become ready",
           default="60s", metavar="DURATION", commands=_RUN),
    Option("--wait", "value", "wait MIN of quiet (at most MAX) before applying",
           default="250ms:2s", metavar="MIN[:MAX]",
           commands=_WATCHING),
    Option("--metrics", "value", "serve /metrics, /healthz, /readyz here (:9102); implies "
           "--init", metavar="HOST:PORT", commands=_WATCHING),
    Option("--restart-limit", "value", "at most N rotation restarts per DURATION (3/10m); "
           "later ones wait", metavar="N/DURATION", commands=_RUN),
    Option("--revoke-on-exit", "flag", "at exit, revoke the Vault leases and token envwrap "
           "got; implies --init", commands=_RUN),
    Option("--cache", "value", "keep the last secrets here, encrypted, for when a store is "
           "down", metavar="PATH", commands=_RUN),
    Option("--cache-key-file", "value", "the key material of --cache (or the variable "
           "ENVWRAP_CACHE_KEY)", metavar="FILE", commands=_RUN),
    Option("--cache-max-age", "value", "never start from a --cache file older than this",
           default="24h", metavar="DURATION", commands=_RUN),
    Option("--tls-cert", "value", "the webhook's certificate chain, PEM (re-read when it "
           "changes)", metavar="FILE", commands=_WEBHOOK),
    Option("--tls-key", "value", "the webhook's private key, PEM", metavar="FILE",
           commands=_WEBHOOK),
    Option("--image", "value", "the envwrap bundle image the injected init container runs",
           metavar="IMAGE", commands=_WEBHOOK),
    Option("--to", "value", "the secret to write the values to (vault://MOUNT/PATH, "
           "aws-sm://NAME)", metavar="REF", commands=_IMPORT),
    Option("--only", "list", "move only these variables (comma-separated)", metavar="NAMES",
           commands=_IMPORT),
    Option("--exclude", "list", "keep these variables as they are (comma-separated)",
           metavar="NAMES", commands=_IMPORT),
    Option("--write", "value", "write the .env to use from now on, values replaced by "
           "references", metavar="FILE", commands=_IMPORT),
    Option("--force", "flag", "write a new version of a secret that exists", commands=_IMPORT),
    Option("--dry-run", "flag", "say what would be stored where (names only); write nothing",
           commands=_IMPORT),
)
_BY_FLAG = {option.flag: option for option in OPTIONS}


class Settings:
    """Every option, converted and checked. Durations are seconds, signals numbers."""

    command: str = "run"
    argv: list[str]
    env_file: list[str]
    no_env_file: bool = False
    override: bool = False
    from_: list[str]
    allow_name: list[str]
    pass_env: list[str]
    scrub_env: list[str]
    start_timeout: float = 30.0
    log_level: str = "warning"
    log_format: str = "text"
    debug: bool = False
    audit_log: str | None = None
    require_example: str | None = None
    example: str | None = None
    #: ``--format``; "" until parsed, then the command's default (:data:`FORMATS`)
    format: str = ""
    init: bool = False
    watch: bool = False
    interval: float = 60.0
    splay: float = 0.0
    on_change: str = "restart"
    reload_signal: int = 1
    kill_signal: int = 15
    kill_timeout: float = 10.0
    render: list[str]
    render_format: str = "auto"
    mask: bool = False
    target_pid_file: str | None = None
    target_name: str | None = None
    listen: list[str]
    ready: str | None = None
    ready_timeout: float = 60.0
    wait: tuple[float, float] = (0.25, 2.0)
    #: the folder envwrap was started in (absolute), once paths are made absolute;
    #: "" when it cannot be known (it was removed before envwrap started)
    start_folder: str = ""
    metrics: str | None = None
    #: ``--restart-limit``: (restarts, window in seconds)
    restart_limit: tuple[int, float] | None = None
    revoke_on_exit: bool = False
    cache: str | None = None
    cache_key_file: str | None = None
    cache_max_age: float = 86400.0
    tls_cert: str | None = None
    tls_key: str | None = None
    image: str | None = None
    to: str | None = None
    only: list[str]
    exclude: list[str]
    write: str | None = None
    force: bool = False
    dry_run: bool = False
    #: ``-h`` / ``--help`` was given: print the command's help, nothing else
    help: bool = False

    def __init__(self) -> None:
        self.argv = []
        self.env_file = []
        self.from_ = []
        self.allow_name = []
        self.pass_env = []
        self.scrub_env = []
        self.render = []
        self.listen = []
        self.only = []
        self.exclude = []

    @property
    def supervise(self) -> bool:
        return self.watch or self.init or bool(self.metrics) or self.revoke_on_exit


def parse_args(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> Settings:
    """Build settings from ``ENVWRAP_*`` variables, then the command line, which wins.

    ``-h`` / ``--help`` among the options gives settings with ``help`` set and
    nothing else checked. Raises :class:`UsageError` (64) for an unknown option
    (with the nearest known one) or a missing command, :class:`ConfigError`
    (78) for a bad option value, naming its source.
    """
    settings = Settings()
    command = "run"
    index = 0
    if argv and argv[0] in COMMANDS:
        command = argv[0]
        index = 1
    settings.command = command
    from_cli: dict[str, tuple[object, str]] = {}
    while index < len(argv):
        token = argv[index]
        index += 1
        if token == "--":
            settings.argv = argv[index:]
            break
        if token in HELP_FLAGS:
            settings.help = True
            return settings
        if not token.startswith("-") or token == "-":
            if command in _POSITIONAL:
                settings.argv.append(token)
                continue
            if command != "run":
                raise UsageError(f"'envwrap {command}' takes no command; got {token!r}",
                                 hint=f"see 'envwrap {command} --help'")
            settings.argv = argv[index - 1 :]
            break
        name, has_value, value = token.partition("=")
        option = _BY_FLAG.get(name)
        if option is None:
            raise UsageError(f"unknown option {name!r}", hint=_nearest(name, command))
        if command not in option.commands:
            raise UsageError(f"{name} does not apply to 'envwrap {command}'",
                             hint=f"see 'envwrap {command} --help'")
        if option.kind == "flag":
            if has_value:
                raise UsageError(f"{name} takes no value")
            from_cli[option.dest] = (True, name)
            continue
        if not has_value:
            if index >= len(argv):
                raise UsageError(f"{name} needs a value ({option.metavar})")
            value = argv[index]
            index += 1
        if option.kind == "list":
            previous = from_cli[option.dest][0] if option.dest in from_cli else []
            assert isinstance(previous, list)
            from_cli[option.dest] = ([*previous, value], name)
        else:
            from_cli[option.dest] = (value, name)
    raw: dict[str, tuple[object, str]] = {}
    for candidate in OPTIONS:
        if command in candidate.commands and candidate.env_name in environ:
            text = environ[candidate.env_name]
            raw[candidate.dest] = (_from_env(candidate, text), candidate.env_name)
    raw.update(from_cli)
    for dest, (setting, source) in raw.items():
        _apply(settings, _BY_FLAG["--" + dest.replace("_", "-")], setting, source)
    _check_command(settings)
    _check_generations(settings)
    return settings


def _nearest(name: str, command: str) -> str:
    """"did you mean ...?" for a mistyped option: the nearest one ``command`` takes."""
    import difflib

    flags = [option.flag for option in OPTIONS if command in option.commands]
    close = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
    where = "'envwrap --help'" if command == "run" else f"'envwrap {command} --help'"
    if close:
        return f"did you mean {close[0]}? See {where}"
    return f"see {where}"


def _check_command(settings: Settings) -> None:
    """What each command needs beyond its options' own values."""
    command = settings.command
    if command in FORMATS:
        settings.format = settings.format or FORMATS[command][0]
        if settings.format not in FORMATS[command]:
            raise ConfigError(f"--format {settings.format!r} does not apply to 'envwrap "
                              f"{command}': use one of {', '.join(FORMATS[command])}")
    if command == "run" and not settings.argv:
        raise UsageError("no command given", hint="usage: envwrap [OPTIONS] -- COMMAND [ARG...]"
                         "; see 'envwrap --help'")
    if command in _POSITIONAL and len(settings.argv) != 1:
        word = _POSITIONAL[command]
        raise UsageError(f"'envwrap {command}' takes one {word}",
                         hint=f"see 'envwrap {command} --help'")
    if command == "sidecar":
        if not settings.render:
            raise UsageError("'envwrap sidecar' needs at least one --render PATH")
        if settings.target_pid_file and settings.target_name:
            raise UsageError("give --target-pid-file or --target-name, not both")
    if command == "import" and not settings.to:
        raise UsageError("'envwrap import' needs --to REF, the secret to write to",
                         hint="for example --to vault://secret/app or --to aws-sm://prod/app")


def _check_generations(settings: Settings) -> None:
    """``--ready`` and ``--on-change handoff`` only make sense together with supervision."""
    if settings.command != "run":
        return
    if settings.on_change == "handoff" and not settings.ready:
        raise UsageError(
            "--on-change handoff needs --ready: envwrap stops the old generation only "
            "once the new one is ready",
            hint="for example --ready notify, --ready tcp://127.0.0.1:8080 or --ready 2s",
        )
    if settings.ready and not (settings.supervise or settings.mask):
        raise UsageError("--ready needs a supervised program (--init or --watch)")
    if settings.ready:
        from envwrap.process.ready import parse_check

        parse_check(settings.ready, "--ready")  # fail before the first start


def _from_env(option: Option, text: str) -> object:
    if option.kind == "flag":
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("", "0", "false", "no", "off"):
            return False
        raise ConfigError(f"{option.env_name} must be 1/true/yes/on or 0/false/no/off")
    if option.kind == "list":
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def _apply(settings: Settings, option: Option, value: object, source: str) -> None:
    dest = "from_" if option.dest == "from" else option.dest
    if option.kind != "value":
        setattr(settings, dest, value)
        return
    assert isinstance(value, str)
    if option.choices and value not in option.choices:
        raise ConfigError(f"{source}: {value!r} is not one of {', '.join(option.choices)}")
    converted: object = value
    if option.metavar == "DURATION":
        converted = parse_duration(value, source)
    elif option.metavar == "SIGNAL":
        converted = parse_signal(value, source)
    elif option.dest == "wait":
        converted = parse_wait(value, source)
    elif option.metavar == "N/DURATION":
        converted = parse_rate(value, source)
    setattr(settings, dest, converted)


#: option values that are paths; ``-`` means stdout/stderr, not a file
_PATH_METAVARS = ("PATH", "FILE")


def make_paths_absolute(settings: Settings) -> None:
    """Turn every relative path option into an absolute one, against the current folder.

    Supervise and sidecar modes then leave the folder (``chdir("/")``, see
    docs/containers.md), so that envwrap does not keep it busy for its whole
    life; any path
    read later (a ``.env`` reload, a ``--render`` write) must not depend on it.
    Every option whose metavar is PATH or FILE is a path, so a new one is
    covered as soon as it is in :data:`OPTIONS`.
    """
    try:
        settings.start_folder = os.getcwd()
    except OSError:  # the folder is gone already: relative paths cannot be resolved
        return
    for option in OPTIONS:
        if option.metavar not in _PATH_METAVARS:
            continue
        value = getattr(settings, option.dest)
        if isinstance(value, list):
            setattr(settings, option.dest, [_absolute(item) for item in value])
        elif isinstance(value, str):
            setattr(settings, option.dest, _absolute(value))


def _absolute(path: str) -> str:
    return path if path == "-" else os.path.abspath(path)
