"""Exec a command with a chosen signal mask and ignored signals, as a C parent would.

    with_signals.py [--block SIG]... [--ignore SIG]... -- COMMAND [ARG...]

SIGPIPE and SIGXFSZ are put back to their defaults first (CPython ignores them
for itself), so the command starts exactly with what is asked for.
"""

from __future__ import annotations

import os
import signal
import sys


def main(argv: list[str]) -> None:
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    for name in ("SIGPIPE", "SIGXFSZ"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    blocked = []
    for flag, name in zip(options[::2], options[1::2], strict=True):
        number = getattr(signal, name)
        if flag == "--block":
            blocked.append(number)
        elif flag == "--ignore":
            signal.signal(number, signal.SIG_IGN)
        else:
            raise SystemExit(f"with_signals: unknown option {flag}")
    signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
