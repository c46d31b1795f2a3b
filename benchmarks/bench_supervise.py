"""Supervise mode against tini and dumb-init, side by side, in one run.

1. Idle cost: ``envwrap --init``, ``tini`` and ``dumb-init`` each supervise a
   ``sleep`` at the same time for ``--seconds`` (default 60). Reported per
   wrapper process (not its child): CPU seconds (utime+stime from
   /proc/PID/stat) over the window, as a percentage of one core, and peak RSS
   (VmHWM from /proc/PID/status).
2. Start-up: ``envwrap --init -- true`` against ``tini -- true``,
   ``dumb-init true`` and exec-mode ``envwrap -- true``; the commands alternate
   run by run, medians reported, with ratios.

Targets: idle CPU <= 0.1% of one core; ``--init`` start-up within 1.5x of exec mode.

    python benchmarks/bench_supervise.py [--seconds 60] [--runs 40]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENVWRAP = str(Path(sys.executable).parent / "envwrap")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process itself (fields 14 and 15 of /proc/PID/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def has_child(pid: int) -> bool:
    try:
        return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return False


def wrappers(seconds: float) -> dict[str, list[str]]:
    sleep = ["sleep", str(int(seconds) + 30)]
    found = {"envwrap --init": [ENVWRAP, "--no-env-file", "--init", "--", *sleep]}
    if shutil.which("tini"):
        found["tini -s"] = ["tini", "-s", "--", *sleep]
    if shutil.which("dumb-init"):
        found["dumb-init"] = ["dumb-init", *sleep]
    return found


def idle(seconds: float, env: dict[str, str], cwd: str) -> None:
    procs = {
        name: subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
        for name, argv in wrappers(seconds).items()
    }
    try:
        deadline = time.monotonic() + 10
        while not all(has_child(p.pid) for p in procs.values()):
            if time.monotonic() > deadline:
                raise SystemExit("a wrapper did not start its child")
            time.sleep(0.05)
        time.sleep(1)  # let start-up settle; the window measures idling only
        start = {name: cpu_seconds(p.pid) for name, p in procs.items()}
        began = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - began
        print(f"\nIdle supervision of `sleep` for {elapsed:.1f} s (wrapper process only)")
        print(f"  {'wrapper':<16} {'CPU s (window)':>15} {'% of a core':>12} "
              f"{'CPU s (total)':>14} {'peak RSS MiB':>13}")
        for name, proc in procs.items():
            total = cpu_seconds(proc.pid)
            window = total - start[name]
            print(f"  {name:<16} {window:>15.3f} {100 * window / elapsed:>11.3f}% "
                  f"{total:>14.3f} {peak_rss_mib(proc.pid):>13.1f}")
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(15)


def startup(runs: int, env: dict[str, str], cwd: str) -> None:
    commands = {
        "envwrap -- true (exec)": [ENVWRAP, "--no-env-file", "--", "true"],
        "envwrap --init -- true": [ENVWRAP, "--no-env-file", "--init", "--", "true"],
    }
    if shutil.which("tini"):
        commands["tini -s -- true"] = ["tini", "-s", "--", "true"]
    if shutil.which("dumb-init"):
        commands["dumb-init true"] = ["dumb-init", "true"]
    for argv in commands.values():  # warm up: page cache, and bytecode written once
        for _ in range(3):
            subprocess.run(argv, env=env, cwd=cwd, check=True)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):  # alternating, so drift hits every command alike
        for name, argv in commands.items():
            began = time.perf_counter()
            subprocess.run(argv, env=env, cwd=cwd, check=True)
            times[name].append(time.perf_counter() - began)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    print(f"\nStart-up to exit, median of {runs} alternating runs")
    for name, value in medians.items():
        spread = statistics.quantiles([t * 1000 for t in times[name]], n=4)
        print(f"  {name:<24} {value:7.2f} ms   (quartiles {spread[0]:.2f}-{spread[2]:.2f})")
    init = medians["envwrap --init -- true"]
    exec_ = medians["envwrap -- true (exec)"]
    print(f"  ratio --init / exec mode:  {init / exec_:.2f}x  (target <= 1.5x)")
    if "tini -s -- true" in medians:
        print(f"  ratio --init / tini:       {init / medians['tini -s -- true']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="idle window (default 60)")
    parser.add_argument("--runs", type=int, default=40, help="start-up runs per command")
    args = parser.parse_args()
    # as installed: bytecode may be written (a test environment often forbids it)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    with tempfile.TemporaryDirectory() as cwd:  # no ./.env anywhere near
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, "
              f"envwrap {ENVWRAP}")
        startup(args.runs, env, cwd)
        idle(args.seconds, env, cwd)


if __name__ == "__main__":
    main()
