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
    "COMMANDS", "OPTIONS", "Settings", "help_text", "make_paths_absolute", "parse_args",
]

COMMANDS = ("run", "check", "export", "sidecar", "webhook", "install")
ENV_PREFIX = "ENVWRAP_"
_ALL = frozenset(COMMANDS)
_RUN = frozenset({"run"})
_WATCHING = frozenset({"run", "sidecar"})
_WEBHOOK = frozenset({"webhook"})


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
           metavar="PATH"),
    Option("--no-env-file", "flag", "read no .env file, not even ./.env"),
    Option("--override", "flag", ".env files and --from win over the process environment"),
    Option("--from", "list", "import every top-level key of one secret as a variable "
           "(repeatable)", metavar="REF"),
    Option("--allow-name", "list", "let --from set this variable even though it changes how "
           "programs load (PATH, LD_PRELOAD, ...)", metavar="NAME"),
    Option("--pass-env", "list", "keep this credential variable (VAULT_TOKEN, ENVWRAP_...) in "
           "the child's environment", metavar="NAME"),
    Option("--scrub-env", "list", "remove the variables matching this glob from the child's "
           "environment (repeatable; e.g. 'AWS_*')", metavar="GLOB", commands=_RUN),
    Option("--start-timeout", "value", "how long to retry an unreachable store at start",
           default="30s", metavar="DURATION"),
    Option("--log-level", "value", "how much envwrap says on stderr", default="warning",
           choices=("debug", "info", "warning", "error"), metavar="LEVEL"),
    Option("--log-format", "value", "text or JSON lines", default="text",
           choices=("text", "json"), metavar="FORMAT"),
    Option("--debug", "flag", "add tracebacks to errors (never values)"),
    Option("--audit-log", "value", "append one JSON line per secret access, rotation, restart "
           "and signal ('-' for stderr)", metavar="PATH"),
    Option("--require-example", "value", "fail unless every key of this example file is set",
           metavar="PATH", commands=_RUN),
    Option("--example", "value", "fail unless every key of this example file is set",
           metavar="PATH", commands=frozenset({"check"})),
    Option("--format", "value", "output format", default="dotenv",
           choices=("dotenv", "json", "shell"), metavar="FORMAT",
           commands=frozenset({"export"})),
    Option("--init", "flag", "stay the parent: forward signals, reap zombies (as tini does)",
           commands=_RUN),
    Option("--watch", "flag", "stay the parent and apply secret rotations", commands=_RUN),
    Option("--interval", "value", "how often to poll the stores", default="60s",
           metavar="DURATION", commands=_WATCHING),
    Option("--splay", "value", "wait a random time up to this before applying a change",
           default="0s", metavar="DURATION", commands=_WATCHING),
    Option("--on-change", "value", "what a rotation does to the child", default="restart",
           choices=("restart", "signal", "exit", "handoff"), metavar="ACTION", commands=_RUN),
    Option("--reload-signal", "value", "the signal for --on-change signal and the sidecar",
           default="SIGHUP", metavar="SIGNAL", commands=_WATCHING),
    Option("--kill-signal", "value", "the signal that asks the child to stop",
           default="SIGTERM", metavar="SIGNAL", commands=_RUN),
    Option("--kill-timeout", "value", "how long the child may take to stop before SIGKILL",
           default="10s", metavar="DURATION", commands=_RUN),
    Option("--render", "list", "write the resolved secrets to this file, mode 0600 "
           "(repeatable)", metavar="PATH", commands=_WATCHING),
    Option("--render-format", "value", "format of --render files (auto: by extension)",
           default="auto", choices=("auto", "dotenv", "json"), metavar="FORMAT",
           commands=_WATCHING),
    Option("--mask", "flag", "replace secret values in the child's stdout and stderr",
           commands=_RUN),
    Option("--target-pid-file", "value", "the process to signal: its pid file",
           metavar="FILE", commands=frozenset({"sidecar"})),
    Option("--target-name", "value", "the process to signal: its name", metavar="NAME",
           commands=frozenset({"sidecar"})),
    Option("--listen", "list", "bind this address (HOST:PORT, :PORT, [::1]:PORT, unix:PATH) and "
           "pass it to every generation as fd 3, 4, ... (repeatable); webhook: serve HTTPS "
           "there", metavar="ADDR", commands=_RUN | _WEBHOOK),
    Option("--ready", "value", "when a generation is ready: notify, http(s)://..., "
           "tcp://HOST:PORT, log:REGEX or a duration", metavar="CHECK", commands=_RUN),
    Option("--ready-timeout", "value", "how long a generation may take to become ready",
           default="60s", metavar="DURATION", commands=_RUN),
    Option("--wait", "value", "apply a change once nothing changed for MIN, at the latest "
           "MAX after the first change (quiescence)", default="250ms:2s", metavar="MIN[:MAX]",
           commands=_WATCHING),
    Option("--metrics", "value", "serve /metrics, /healthz and /readyz on this address "
           "(127.0.0.1:9102, :9102); implies --init", metavar="HOST:PORT", commands=_WATCHING),
    Option("--restart-limit", "value", "at most N rotation restarts per DURATION (3/10m); "
           "later changes wait, coalesced", metavar="N/DURATION", commands=_RUN),
    Option("--revoke-on-exit", "flag", "revoke the Vault leases and login token envwrap "
           "obtained when it exits (and leases a stopped generation alone used); implies --init",
           commands=_RUN),
    Option("--cache", "value", "keep the last resolved secrets in this file, encrypted, and "
           "start from it when a store is unreachable", metavar="PATH", commands=_RUN),
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
    format: str = "dotenv"
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

    def __init__(self) -> None:
        self.argv = []
        self.env_file = []
        self.from_ = []
        self.allow_name = []
        self.pass_env = []
        self.scrub_env = []
        self.render = []
        self.listen = []

    @property
    def supervise(self) -> bool:
        return self.watch or self.init or bool(self.metrics) or self.revoke_on_exit


def parse_args(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> Settings:
    """Build settings from ``ENVWRAP_*`` variables, then the command line, which wins.

    Raises :class:`UsageError` (64) for an unknown option or a missing command,
    :class:`ConfigError` (78) for a bad option value, naming its source.
    """
    settings = Settings()
    command = "run"
    index = 0
    if argv and argv[0] in COMMANDS:
        command = argv[0]
        index = 1
    settings.command = command
    raw: dict[str, tuple[object, str]] = {}
    for candidate in OPTIONS:
        if command in candidate.commands and candidate.env_name in environ:
            text = environ[candidate.env_name]
            raw[candidate.dest] = (_from_env(candidate, text), candidate.env_name)
    from_cli: set[str] = set()
    while index < len(argv):
        token = argv[index]
        index += 1
        if token == "--":
            settings.argv = argv[index:]
            break
        if not token.startswith("-") or token == "-":
            if command == "install":  # its folder
                settings.argv.append(token)
                continue
            if command != "run":
                raise UsageError(f"'envwrap {command}' takes no command; got {token!r}")
            settings.argv = argv[index - 1 :]
            break
        name, has_value, value = token.partition("=")
        option = _BY_FLAG.get(name)
        if option is None:
            raise UsageError(f"unknown option {name!r}", hint="see 'envwrap --help'")
        if command not in option.commands:
            raise UsageError(f"{name} does not apply to 'envwrap {command}'")
        if option.kind == "flag":
            if has_value:
                raise UsageError(f"{name} takes no value")
            raw[option.dest] = (True, name)
            continue
        if not has_value:
            if index >= len(argv):
                raise UsageError(f"{name} needs a value ({option.metavar})")
            value = argv[index]
            index += 1
        if option.kind == "list":
            previous = raw[option.dest][0] if option.dest in from_cli else []
            assert isinstance(previous, list)
            raw[option.dest] = ([*previous, value], name)
            from_cli.add(option.dest)
        else:
            raw[option.dest] = (value, name)
    for dest, (setting, source) in raw.items():
        _apply(settings, _BY_FLAG["--" + dest.replace("_", "-")], setting, source)
    if command == "run" and not settings.argv:
        raise UsageError("no command given", hint="usage: envwrap [OPTIONS] -- COMMAND [ARG...]")
    if command == "sidecar":
        if not settings.render:
            raise UsageError("'envwrap sidecar' needs at least one --render PATH")
        if settings.target_pid_file and settings.target_name:
            raise UsageError("give --target-pid-file or --target-name, not both")
    _check_generations(settings)
    return settings


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


def help_text() -> str:
    lines = [
        "usage: envwrap [OPTIONS] -- COMMAND [ARG...]   run COMMAND with its secrets",
        "       envwrap check [OPTIONS]                 resolve everything, print a table",
        "       envwrap export [--format F] [OPTIONS]   print the resolved environment",
        "       envwrap sidecar --render PATH [OPTIONS] keep files fresh, signal a process",
        "       envwrap webhook --listen ADDR --tls-cert FILE --tls-key FILE --image IMAGE",
        "                                               Kubernetes webhook injecting envwrap",
        "       envwrap install DIR                     copy this envwrap (the bundle) into DIR",
        "",
        "References (whole value, or inline as ${REF}; #KEY or #/json/pointer picks a field):",
        "  vault://MOUNT/PATH[?version=N]                 Vault / OpenBao, KV v1 or v2",
        "  aws-sm://NAME-OR-ARN[?version-stage=S|version-id=V][&region=R]",
        "  arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME",
        "  aws-ssm://NAME[?region=R], arn:aws:ssm:REGION:ACCOUNT:parameter/NAME",
        "  ref+file:///ABSOLUTE/PATH                     a file (Kubernetes secret volume)",
        "  ref+SCHEME://...                               any form, or a plug-in backend",
        "Exit codes: the program's (128+N for signal N); 64 usage, 65 not found,",
        "  69 store unreachable, 75 --on-change exit, 77 denied, 78 configuration,",
        "  126/127 command cannot run / not found.",
        "",
        "Options (each also settable as ENVWRAP_<NAME>, lists comma-separated):",
    ]
    for option in OPTIONS:
        flag = f"{option.flag} {option.metavar}".rstrip()
        where = "" if option.commands == _ALL else f" [{'/'.join(sorted(option.commands))}]"
        default = f" (default {option.default})" if option.default is not None else ""
        choices = f" {{{'|'.join(option.choices)}}}" if option.choices else ""
        lines.append(f"  {flag:<28} {option.help}{choices}{default}{where}")
        lines.append(f"  {'':<28} env: {option.env_name}")
    return "\n".join(lines) + "\n"
