"""Leaf parsers and one retry schedule, shared by options, probes and loops.

Durations (``500ms``, ``30s``, ``5m``), ``MIN[:MAX]`` waits, ``N/DURATION``
rates, signal names, ``HOST:PORT`` addresses and :class:`Backoff`. Each parser
raises :class:`~envwrap.errors.ConfigError` (exit 78) naming where the text came
from (``source``: an option or variable name), never anything else.
"""

from __future__ import annotations

import _signal
import random
import time

from envwrap.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "Backoff",
    "parse_duration",
    "parse_host_port",
    "parse_rate",
    "parse_signal",
    "parse_wait",
    "signal_name",
]

_UNITS = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))


def parse_duration(text: str, source: str = "duration") -> float:
    """``"30s"``, ``"500ms"``, ``"1m"``, ``"2h"`` or plain seconds -> seconds."""
    cleaned = text.strip().lower()
    for suffix, factor in _UNITS:
        if cleaned.endswith(suffix) and not (suffix == "s" and cleaned.endswith("ms")):
            cleaned, scale = cleaned[: -len(suffix)], factor
            break
    else:
        scale = 1.0
    try:
        seconds = float(cleaned) * scale
    except ValueError:
        raise ConfigError(
            f"{source}: {text!r} is not a duration (examples: 500ms, 30s, 5m, 1h)"
        ) from None
    if not 0 <= seconds < 10**7:  # also false for NaN
        raise ConfigError(f"{source}: {text!r} is out of range")
    return seconds


def parse_wait(text: str, source: str = "--wait") -> tuple[float, float]:
    """``"250ms:2s"`` -> ``(0.25, 2.0)``; MAX defaults to 4 x MIN, as in consul-template."""
    low, has_high, high = text.partition(":")
    minimum = parse_duration(low, source)
    maximum = parse_duration(high, source) if has_high else 4 * minimum
    if maximum < minimum:
        raise ConfigError(f"{source}: {text!r}: MAX must not be shorter than MIN")
    return minimum, maximum


def parse_rate(text: str, source: str = "limit") -> tuple[int, float]:
    """``"3/10m"`` -> (3, 600.0): at most N events in any window of DURATION."""
    count, slash, window = text.strip().partition("/")
    if not slash or not count.strip().isdigit() or int(count) < 1:
        raise ConfigError(f"{source}: {text!r} is not N/DURATION (example: 3/10m)")
    seconds = parse_duration(window, source)
    if seconds <= 0:
        raise ConfigError(f"{source}: {text!r} needs a window longer than 0")
    return int(count), seconds


def parse_signal(text: str, source: str = "signal") -> int:
    """``"SIGHUP"``, ``"HUP"`` or ``"1"`` -> 1."""
    name = text.strip().upper()
    if name.isdigit():
        number = int(name)
    else:
        number = getattr(_signal, name if name.startswith("SIG") else "SIG" + name, -1)
        if not isinstance(number, int) or name.startswith("SIG_"):
            number = -1
    if not 0 < number < _signal.NSIG:
        raise ConfigError(f"{source}: {text!r} is not a signal (examples: SIGHUP, TERM, 15)")
    return number


_names: dict[int, str] = {}


def signal_name(signum: int) -> str:
    """``15`` -> ``"SIGTERM"``, for messages (without importing enum)."""
    if not _names:
        for name in dir(_signal):
            if name.startswith("SIG") and not name.startswith("SIG_"):
                _names.setdefault(int(getattr(_signal, name)), name)
    return _names.get(signum, str(signum))


def parse_host_port(text: str, source: str, *, port_zero: bool = True) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``[IPV6]:PORT`` -> ``(host, port)``.

    The host comes back without brackets, and empty for ``:PORT`` (every
    interface: the caller decides what that means). ``port_zero`` allows port 0
    (the system picks one), which a listener accepts and a probe does not.
    """
    value = text.strip()
    where = f"{source} {value!r}"
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ConfigError(f"{where}: expected [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon:
            raise ConfigError(f"{where}: expected HOST:PORT, :PORT or [IPV6]:PORT")
    lowest = 0 if port_zero else 1
    if not port_text.isdigit() or not lowest <= int(port_text) <= 65535:
        raise ConfigError(f"{where}: {port_text!r} is not a port ({lowest}-65535)")
    return host, int(port_text)


class Backoff:
    """Exponential backoff with full jitter: ``first``, doubling, at most ``cap``.

    :meth:`next_delay` gives the next wait and counts the attempt; :meth:`wait`
    sleeps it, bounded by a deadline; :meth:`reset` starts over after a success.
    ``jitter=False`` gives the plain doubling schedule (a retry a person reads
    about in a log: "retrying in 60s").
    """

    def __init__(
        self,
        *,
        first: float = 0.2,
        cap: float = 5.0,
        jitter: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self.clock = clock
        self.sleep = sleep
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.first * (2**self.attempt))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling) if self.jitter else ceiling

    def reset(self) -> None:
        self.attempt = 0

    def wait(self, deadline: float) -> bool:
        """Sleep before the next try; ``False`` when the deadline leaves no time."""
        remaining = deadline - self.clock()
        if remaining <= 0:
            return False
        self.sleep(min(self.next_delay(), remaining))
        return True
