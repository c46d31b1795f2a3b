"""``--help``: one page per command, built from the table of options (docs/reference.md).

Each page fits a terminal (at most 60 lines of at most 100 columns, a test
checks it), shows examples first, and lists only the options its command
takes, grouped by what they are about. Loaded only when help is asked for.
"""

from __future__ import annotations

from envwrap.config import COMMANDS, FORMATS, OPTIONS, Option

__all__ = ["GROUPS", "help_page", "options_of"]

WIDTH = 100
#: option groups, in page order. A flag may sit in two groups (``--listen`` is
#: for handoff and the webhook); a flag not yet defined is skipped, and one in
#: no group lands in "other" (a test wants none there).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sources", ("--env-file", "--no-env-file", "--override", "--from", "--allow-name",
                 "--require-example", "--example")),
    ("import", ("--to", "--only", "--exclude", "--write", "--force", "--dry-run")),
    ("output", ("--format",)),
    ("stores", ("--start-timeout", "--cache", "--cache-key-file", "--cache-max-age")),
    ("supervision", ("--init", "--kill-signal", "--kill-timeout", "--mask")),
    ("rotation", ("--watch", "--interval", "--splay", "--wait", "--on-change",
                  "--reload-signal", "--restart-limit", "--render", "--render-format")),
    ("target", ("--target-pid-file", "--target-name")),
    ("handoff", ("--listen", "--ready", "--ready-timeout")),
    ("webhook", ("--listen", "--tls-cert", "--tls-key", "--image")),
    ("hygiene", ("--pass-env", "--scrub-env", "--revoke-on-exit")),
    ("telemetry", ("--log-level", "--log-format", "--debug", "--audit-log", "--metrics")),
)

#: command -> (usage lines, what it does, examples)
_PAGES: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "run": (
        ("envwrap [run] [OPTIONS] -- COMMAND [ARG...]",),
        "Resolve the references in the environment and .env, then run COMMAND with the "
        "values. Without --init or --watch envwrap becomes COMMAND (same PID, no process "
        "left behind).",
        ("envwrap -- node server.js",
         "envwrap --watch --interval 30s -- gunicorn app:app",
         "envwrap --watch --listen :8080 --ready notify --on-change handoff -- node server.js"),
    ),
    "check": (
        ("envwrap check [OPTIONS]",),
        "Resolve every reference and print variable, store, path, key and version -- never "
        "a value. The exit code is a run's: 0 when everything resolves.",
        ("envwrap check", "envwrap check --format json --example .env.example   # a CI gate"),
    ),
    "export": (
        ("envwrap export [--format dotenv|json|shell] [OPTIONS]",),
        "Print the variables envwrap sets (.env, references, --from) WITH THEIR VALUES, for "
        "debugging and CI. The only command that prints values.",
        ("envwrap export --format json", "eval \"$(envwrap export --format shell)\""),
    ),
    "sidecar": (
        ("envwrap sidecar --render PATH [--target-pid-file FILE | --target-name NAME] "
         "[OPTIONS]",),
        "No program of its own: keep the --render files fresh and signal another process "
        "after each change (for a Kubernetes pod with a shared process namespace).",
        ("envwrap sidecar --render /run/app/env.json --target-name nginx "
         "--reload-signal SIGHUP",),
    ),
    "webhook": (
        ("envwrap webhook --listen ADDR --tls-cert FILE --tls-key FILE --image IMAGE",),
        "A Kubernetes mutating admission webhook that injects envwrap into the pods of "
        "labelled namespaces (docs/kubernetes.md).",
        ("envwrap webhook --listen :8443 --tls-cert tls.crt --tls-key tls.key "
         "--image envwrap:bundle",),
    ),
    "install": (
        ("envwrap install DIR",),
        "Copy this envwrap (the self-contained bundle it runs from) into DIR, for an init "
        "container that shares it with the application container.",
        ("envwrap install /envwrap",),
    ),
    "import": (
        ("envwrap import [--env-file FILE]... --to REF [--only NAMES] [--exclude NAMES]",
         "               [--write FILE] [--force] [--dry-run]"),
        "Move the values of a .env into one secret (each variable a key of it) and write the "
        ".env to use from now on, with references. Never prints a value; VAULT_*, AWS_* "
        "and ENVWRAP_* stay (envwrap needs them to reach the store).",
        ("envwrap import --to vault://secret/app --exclude PORT,NODE_ENV --dry-run",
         "envwrap import --to aws-sm://prod/app --write .env.new"),
    ),
    "completion": (
        ("envwrap completion bash|zsh|fish",),
        "Print a shell completion script.",
        ("source <(envwrap completion bash)            # in ~/.bashrc",
         "envwrap completion zsh > \"${fpath[1]}/_envwrap\"",
         "envwrap completion fish > ~/.config/fish/completions/envwrap.fish"),
    ),
}

_OVERVIEW = """\
usage: envwrap [OPTIONS] -- COMMAND [ARG...]   run COMMAND with its secrets in its environment
       envwrap COMMAND [OPTIONS]               where COMMAND is one of:
{commands}

Examples:
  envwrap -- node server.js                  # .env holds DB_PASSWORD=vault://secret/app#db
  envwrap --watch -- node server.js          # restart it when a secret changes
  envwrap check                              # what resolves from where (never values)

References (the whole value, or inline as ${{REF}}; #KEY or #/json/pointer picks a field):
  vault://MOUNT/PATH[?version=N]                 Vault / OpenBao, KV v1 or v2, any path
  aws-sm://NAME-OR-ARN[?version-stage=S|version-id=V][&region=R]   AWS Secrets Manager
  arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME
  aws-ssm://NAME[?region=R], arn:aws:ssm:REGION:ACCOUNT:parameter/NAME
  ref+file:///ABSOLUTE/PATH                      a file (a Kubernetes secret volume)
  ref+SCHEME://...                               any form, or a plug-in backend

Exit codes: the program's (128+N for signal N); 64 usage, 65 not found, 69 store
  unreachable, 75 --on-change exit, 77 denied, 78 configuration, 126/127 cannot run.

Every option is also an ENVWRAP_<NAME> variable (--env-file: ENVWRAP_ENV_FILE, lists
comma-separated). 'envwrap COMMAND --help' lists a command's options ('envwrap run --help'
those of a run); docs/reference.md has them all.
"""

_SUMMARIES = {
    "run": "run COMMAND (the same as the first form)",
    "check": "resolve everything; print where each value comes from",
    "export": "print the resolved environment (values!) for debugging",
    "sidecar": "keep --render files fresh, signal another process",
    "webhook": "Kubernetes admission webhook that injects envwrap",
    "install": "copy this envwrap bundle into a folder",
    "import": "move a .env's values into Vault or AWS Secrets Manager",
    "completion": "print a bash, zsh or fish completion script",
}


def options_of(command: str) -> list[Option]:
    return [option for option in OPTIONS if command in option.commands]


def help_page(command: str | None = None) -> str:
    """The help of ``command``; the overview for ``None``."""
    if command is None:
        listed = "\n".join(f"         {name:<12} {_SUMMARIES[name]}" for name in COMMANDS)
        return _OVERVIEW.format(commands=listed)
    usages, what, examples = _PAGES[command]
    lines = [f"usage: {usages[0]}", *(f"       {usage}" for usage in usages[1:]), ""]
    lines += _wrap(what, "")
    lines += ["", "Examples:", *(f"  {example}" for example in examples)]
    for title, options in _grouped(command):
        lines += ["", f"{title.capitalize()}:"]
        lines += [_option_line(option, command) for option in options]
    if options_of(command):
        lines += ["", "Every option is also ENVWRAP_<NAME> (--env-file: ENVWRAP_ENV_FILE); exit "
                  "codes: 'envwrap --help'."]
    return "\n".join(lines) + "\n"


def _grouped(command: str) -> list[tuple[str, list[Option]]]:
    mine = {option.flag: option for option in options_of(command)}
    placed: set[str] = set()
    groups: list[tuple[str, list[Option]]] = []
    for title, flags in GROUPS:
        members = [mine[flag] for flag in flags if flag in mine and flag not in placed]
        placed.update(option.flag for option in members)
        if members:
            groups.append((title, members))
    rest = [option for flag, option in mine.items() if flag not in placed]
    if rest:
        groups.append(("other", rest))
    return groups


def _option_line(option: Option, command: str) -> str:
    flag = f"{option.flag} {option.metavar}".rstrip()
    choices = FORMATS.get(command, option.choices) if option.flag == "--format" else option.choices
    text = option.help
    if option.flag == "--format":
        text = "output format"
    if choices:
        text += f": {'|'.join(choices)}"
    default = choices[0] if option.flag == "--format" else option.default
    if default is not None:
        text += f" (default {default})"
    # one line each, at most WIDTH columns (a test checks): keep an option's help short
    return f"  {flag:<26} {text}"


def _wrap(text: str, indent: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, WIDTH - 2, initial_indent=indent, subsequent_indent=indent)
