"""A test child: prints ``ready PID`` once set up, then one line per signal received.

Options (all optional):

- ``--die-on SIG`` (repeatable; default SIGTERM): print the signal's name, then
  die of it (default disposition, re-raised), so the exit status says so.
- ``--ignore SIG`` (repeatable): SIG_IGN, never printed (escalation tests).
- ``--default SIG`` (repeatable): leave at the default action (e.g. SIGTSTP, so
  that Ctrl-Z really stops the process).
- ``--tty``: before ``ready``, print ``tty pgrp=P fg=F`` (own process group, and
  the foreground group of the terminal on stdin).
- ``--lock PATH``: take an exclusive flock on PATH, or print ``overlap`` and
  exit 99 -- two generations holding it at once would be a supervisor bug.
- ``--grandchild``: fork a child that shares the lock, ignores every signal
  (only SIGKILL ends it) and sleeps; ``ready`` then also names it: ``ready PID grandchild=GPID``.
- ``--tag TEXT``: appended to the ready line (as is ``$ECHO_TAG``, if set).

Writes with os.write (async-signal-safe; print() is not reentrant).
"""

from __future__ import annotations

import os
import signal
import sys
import time

#: faults (SIGSEGV...) are caught too: blocked, only one another process sends is
#: queued (the kernel delivers a real fault whatever the mask)
_SKIP = {signal.SIGKILL, signal.SIGSTOP}


def _parse_signal(text: str) -> int:
    name = text.upper()
    return int(getattr(signal, name if name.startswith("SIG") else "SIG" + name))


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # real-time signals have no name
        return f"SIG{signum}"


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main(argv: list[str]) -> int:
    die_on: set[int] = set()
    ignore: set[int] = set()
    default: set[int] = set()
    tty = grandchild = False
    lock = tag = None
    args = iter(argv)
    for arg in args:
        if arg == "--die-on":
            die_on.add(_parse_signal(next(args)))
        elif arg == "--ignore":
            ignore.add(_parse_signal(next(args)))
        elif arg == "--default":
            default.add(_parse_signal(next(args)))
        elif arg == "--tty":
            tty = True
        elif arg == "--lock":
            lock = next(args)
        elif arg == "--grandchild":
            grandchild = True
        elif arg == "--tag":
            tag = next(args)
        else:
            raise SystemExit(f"signal_echo: unknown argument {arg!r}")
    if not die_on:
        die_on.add(signal.SIGTERM)

    # Signals are blocked and taken with sigwaitinfo, one at a time, in the
    # kernel's order: handlers would run in reverse order when several signals
    # are pending at once (Linux stacks the handler frames).
    catch = set()
    for number in signal.valid_signals():
        if number in _SKIP or number in default:
            continue
        try:
            if number in ignore:
                signal.signal(number, signal.SIG_IGN)
            else:
                signal.signal(number, signal.SIG_DFL)
                catch.add(number)
        except (OSError, ValueError):
            continue
    signal.pthread_sigmask(signal.SIG_BLOCK, catch)
    extra = ""
    if lock is not None:
        import fcntl

        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say("overlap")
            return 99
        if grandchild:
            os.set_inheritable(fd, True)
    if grandchild:
        pid = os.fork()
        if pid == 0:  # quiet, and deaf to every signal but SIGKILL
            for number in catch:
                signal.signal(number, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            while True:
                time.sleep(3600)
        extra = f" grandchild={pid}"
    if tty:
        _say(f"tty pgrp={os.getpgrp()} fg={os.tcgetpgrp(0)}")
    tags = [t for t in (tag, os.environ.get("ECHO_TAG")) if t]
    _say(" ".join([f"ready {os.getpid()}{extra}", *tags]))
    while True:
        signum = signal.sigwaitinfo(catch).si_signo
        _say(_name(signum))
        if signum in die_on:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
            os.kill(os.getpid(), signum)  # default action: death by this signal


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
