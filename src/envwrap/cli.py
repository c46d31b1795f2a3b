"""The command line: argv and ``ENVWRAP_*`` in, an exit code out.

The only module that prints to the user or decides the exit code. Every
:class:`~envwrap.errors.EnvwrapError` becomes one line on stderr and its exit
code; anything else is a bug, reported without its message (an SDK's message
may quote a response) unless ``--debug``.
"""

from __future__ import annotations

import os
import sys

from envwrap import log
from envwrap.config import COMMANDS, parse_args
from envwrap.errors import EX_NOT_FOUND, EnvwrapError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from envwrap.config import Settings

__all__ = ["dispatch", "main"]

EX_SOFTWARE = 70


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"], ["help"]):
        return _help(args[1] if args[:1] == ["help"] and len(args) > 1 else None)
    if args[:1] == ["--version"]:
        from envwrap import __version__

        sys.stdout.write(f"envwrap {__version__}\n")
        return 0
    debug = "--debug" in args[: args.index("--") if "--" in args else len(args)]
    settings: Settings | None = None
    try:
        settings = parse_args(args, os.environ)
        if settings.help:
            return _help(settings.command)
        debug = settings.debug
        log.configure(settings.log_level, settings.log_format)
        code = dispatch(settings, dict(os.environ), sys.stdout.write)
        if settings.command == "run" and (settings.supervise or settings.mask):
            _exit_now(code)
        return code
    except EnvwrapError as err:
        if settings is not None and err.exit_code == EX_NOT_FOUND and err.hint is None:
            err.hint = _meant_command(settings.argv[0], args)
        _report(err, debug)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        _report_bug(exc, debug)
        return EX_SOFTWARE


def dispatch(settings: Settings, environ: dict[str, str], write: Callable[[str], object]) -> int:
    """Run the command of ``settings``; ``write`` prints its output (only cli prints)."""
    from envwrap.config import make_paths_absolute
    from envwrap.telemetry import audit

    make_paths_absolute(settings)
    audit.configure(settings.audit_log)
    if settings.metrics and settings.command in ("run", "sidecar"):
        # before the first resolution: /readyz answers 503 while the stores are slow
        from envwrap.telemetry.server import start_metrics

        start_metrics(settings.metrics, needs_child=settings.command != "sidecar")
    if settings.command == "completion":
        from envwrap.completion import completion_script

        write(completion_script(settings.argv[0]))
        return 0
    if settings.command == "import":
        from envwrap.modes.importer import import_env

        return import_env(settings, environ, write)
    if settings.command in ("check", "export"):
        from envwrap.modes import inspect

        return inspect.check(settings, environ, write) if settings.command == "check" \
            else inspect.export(settings, environ, write)
    if settings.command == "sidecar":
        from envwrap.modes.sidecar import run_sidecar

        return run_sidecar(settings, environ)
    if settings.command == "webhook":
        from envwrap.modes.webhook import run_webhook

        return run_webhook(settings)
    if settings.command == "install":
        from envwrap.modes.install import install

        write(f"envwrap installed as {install(settings.argv)}\n")
        return 0
    from envwrap.modes.run import run

    return run(settings, environ)


def _meant_command(program: str, args: list[str]) -> str | None:
    """``envwrap chek`` runs a program "chek", which is not found: name the command meant."""
    if "--" in args[: args.index(program) if program in args else 0]:
        return None  # written after "--": a program, deliberately
    import difflib

    close = difflib.get_close_matches(program, COMMANDS, n=1, cutoff=0.7)
    return f"did you mean 'envwrap {close[0]}'? See 'envwrap --help'" if close else None


def _help(command: str | None) -> int:
    from envwrap.help import help_page

    if command is not None and command not in COMMANDS:
        log.error(f"no such command {command!r}; the commands are {', '.join(COMMANDS)}")
        return 64
    sys.stdout.write(help_page(command))
    return 0


def _exit_now(code: int) -> None:
    """Leave without interpreter shutdown (~4 ms) once the supervised program is gone.

    Everything envwrap writes is unbuffered or flushed here; the watcher and
    relay threads have been stopped by then.
    """
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 -- contextlib would cost start-up time
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _report(err: EnvwrapError, debug: bool) -> None:
    from envwrap.secret import redact

    if debug:
        _print_traceback(err)
    log.error(redact(str(err)))


def _report_bug(exc: BaseException, debug: bool) -> None:
    if debug:
        _print_traceback(exc)
    log.error(
        f"internal error ({type(exc).__name__}); run again with --debug for a traceback "
        "and report it"
    )


def _print_traceback(exc: BaseException) -> None:
    import traceback

    from envwrap.secret import redact

    text = "".join(traceback.format_exception(exc))
    sys.stderr.write(redact(text))
