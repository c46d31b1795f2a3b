"""envwrap on a pseudo-terminal, started as a terminal emulator starts a shell."""

from __future__ import annotations

import os
import pty
import shutil
import signal
from collections.abc import Sequence

from testsupport import envwrap_command

INTR, SUSP = b"\x03", b"\x1a"  # Ctrl-C, Ctrl-Z with the default termios settings


def spawn_in_pty(
    args: list[str], env: dict[str, str], *, background: bool = False,
    prefix: Sequence[str] = (),
) -> tuple[int, int]:
    """envwrap in a new session on a new pty, as a terminal emulator would start a shell."""
    argv = [*prefix, *envwrap_command(), "--no-env-file", *args]
    if prefix:
        argv[0] = shutil.which(argv[0]) or argv[0]
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover -- the child
        try:
            if background:
                # a background job of this session: its own process group, while
                # the session leader (this process) keeps the terminal
                job = os.fork()
                if job == 0:
                    os.setpgid(0, 0)
                    os.execve(argv[0], argv, env)
                os.write(1, f"leader {os.getpid()}\n".encode())
                _, status = os.waitpid(job, 0)
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(120)
    return pid, master


def wait_status(pid: int, options: int = 0) -> int:
    _, status = os.waitpid(pid, options)
    return status


def close(pid: int, master: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    os.close(master)
