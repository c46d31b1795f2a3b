"""``envwrap completion bash|zsh|fish``: completion scripts built from the table of options.

Each command completes its own options; an option's value completes from its
choices (``--on-change``), as a file (``PATH``, ``FILE``) or not at all; after
``--`` the words are the program's. zsh runs the bash function through its
``bashcompinit`` layer, so both shells complete alike (docs/reference.md).
"""

from __future__ import annotations

from envwrap.config import COMMANDS, FORMATS, OPTIONS, Option
from envwrap.errors import UsageError

__all__ = ["SHELLS", "completion_script"]

SHELLS = ("bash", "zsh", "fish")
_FILE_METAVARS = ("PATH", "FILE")


def completion_script(shell: str) -> str:
    if shell not in SHELLS:
        raise UsageError(f"no completion for {shell!r}: choose one of {', '.join(SHELLS)}")
    if shell == "fish":
        return _fish()
    script = _bash()
    if shell == "zsh":
        return "#compdef envwrap\nautoload -U +X bashcompinit && bashcompinit\n" + script
    return script


def _words(flag: str) -> str:
    """The choices of ``flag`` for bash; ``--format``'s depend on the command."""
    if flag != "--format":
        return " ".join(_choices(flag))
    cases = " ".join(f"{command}) echo {' '.join(FORMATS[command])};;" for command in FORMATS)
    return f"$(case $command in {cases} esac)"


def _choices(flag: str) -> tuple[str, ...]:
    if flag == "--format":
        return tuple(dict.fromkeys(c for choices in FORMATS.values() for c in choices))
    return next(option.choices for option in OPTIONS if option.flag == flag)


def _bash() -> str:
    choices = "\n".join(
        f"        {o.flag}) COMPREPLY=($(compgen -W \"{_words(o.flag)}\" -- \"$cur\"));"
        " return;;"
        for o in OPTIONS if o.choices
    )
    files = "|".join(o.flag for o in OPTIONS if o.metavar in _FILE_METAVARS and not o.choices)
    values = "|".join(
        o.flag for o in OPTIONS
        if o.kind != "flag" and not o.choices and o.metavar not in _FILE_METAVARS
    )
    per_command = "\n".join(
        f"        {command}) opts='{' '.join(_flags(command))}';;" for command in COMMANDS
    )
    return f"""\
# envwrap completion for bash (envwrap completion bash); zsh loads it through bashcompinit
_envwrap() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local command=run i
    for ((i = 1; i < COMP_CWORD; i++)); do
        if [[ ${{COMP_WORDS[i]}} == -- ]]; then
            COMPREPLY=($(compgen -c -- "$cur")); return
        fi
    done
    case "${{COMP_WORDS[1]}}" in
        {'|'.join(COMMANDS)}) [[ COMP_CWORD -gt 1 ]] && command=${{COMP_WORDS[1]}};;
    esac
    case "$prev" in
{choices}
        {files}) COMPREPLY=($(compgen -f -- "$cur")); return;;
        {values}) return;;
    esac
    if [[ $command == completion ]]; then
        COMPREPLY=($(compgen -W '{' '.join(SHELLS)}' -- "$cur")); return
    fi
    if [[ $command == install && $cur != -* ]]; then
        COMPREPLY=($(compgen -d -- "$cur")); return
    fi
    local opts
    case "$command" in
{per_command}
    esac
    if [[ COMP_CWORD -eq 1 && $cur != -* ]]; then
        COMPREPLY=($(compgen -W '{' '.join(COMMANDS)} --' -- "$cur")); return
    fi
    COMPREPLY=($(compgen -W "$opts --help" -- "$cur"))
}}
complete -o default -F _envwrap envwrap
"""


def _flags(command: str) -> list[str]:
    return [option.flag for option in OPTIONS if command in option.commands]


def _fish() -> str:
    lines = [
        "# envwrap completion for fish (envwrap completion fish)",
        "complete -c envwrap -f",
        f"complete -c envwrap -n __fish_use_subcommand -a '{' '.join(COMMANDS)}'",
        "complete -c envwrap -n '__fish_seen_subcommand_from completion' "
        f"-a '{' '.join(SHELLS)}'",
        "complete -c envwrap -n '__fish_seen_subcommand_from install' -F",
    ]
    for option in OPTIONS:
        if option.flag == "--format":  # its choices depend on the command
            lines += [_fish_line(option, [command], FORMATS[command]) for command in FORMATS]
        else:
            commands = [c for c in COMMANDS if c in option.commands]
            lines.append(_fish_line(option, commands, option.choices))
    return "\n".join(lines) + "\n"



def _fish_line(option: Option, commands: list[str], choices: tuple[str, ...]) -> str:
    others = " ".join(c for c in commands if c != "run")
    condition = f"__fish_seen_subcommand_from {others}" if others else "false"
    if "run" in commands:  # a run needs no command word: its options are offered at once
        not_run = " ".join(c for c in COMMANDS if c != "run")
        condition = f"not __fish_seen_subcommand_from {not_run}; or {condition}"
    value = ""
    if choices:
        value = f" -x -a '{' '.join(choices)}'"
    elif option.metavar in _FILE_METAVARS:
        value = " -r -F"
    elif option.kind != "flag":
        value = " -x"
    text = option.help.replace("'", "\\'")
    return f"complete -c envwrap -n '{condition}' -l {option.flag[2:]}{value} -d '{text}'"
