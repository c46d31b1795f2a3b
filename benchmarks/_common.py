"""Shared helpers for the benchmarks: alternating timed runs, medians, ratios."""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

BIN = Path(sys.executable).parent


def tool(name: str) -> str | None:
    """A command from this venv, else from PATH."""
    local = BIN / name
    return str(local) if local.exists() else shutil.which(name)


def time_command(argv: Sequence[str], env: Mapping[str, str], cwd: str | None = None) -> float:
    """Wall seconds of one run, from spawn to reaped exit (stdout/stderr to /dev/null)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    old_cwd = os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        actions = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
        started = time.perf_counter()
        pid = os.posix_spawnp(argv[0], list(argv), dict(env), file_actions=actions)
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter() - started
    finally:
        os.chdir(old_cwd)
        os.close(devnull)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv} exited with {os.waitstatus_to_exitcode(status)}")
    return elapsed


def alternate(cases: Mapping[str, Callable[[], float]], runs: int, warmup: int = 2) -> dict[str, list[float]]:
    """Run every case once per round, ``runs`` rounds, so that noise hits all alike."""
    for _ in range(warmup):
        for case in cases.values():
            case()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, case in cases.items():
            samples[name].append(case())
    return samples


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def report(samples: Mapping[str, Sequence[float]], baseline: str) -> None:
    base = statistics.median(samples[baseline])
    width = max(len(n) for n in samples)
    print(f"{'case':<{width}}  median ms   p25-p75 ms     ratio to {baseline}")
    for name, values in samples.items():
        ordered = sorted(values)
        q1, q3 = ordered[len(ordered) // 4], ordered[(3 * len(ordered)) // 4]
        print(f"{name:<{width}}  {median_ms(values):9.1f}   {q1*1000:6.1f}-{q3*1000:<6.1f}   "
              f"{statistics.median(values) / base:6.2f}x")


def kv_value(path: str, key: str = "value") -> str:
    """The agent template of one key of the KV v2 secret ``secret/PATH``."""
    return '{{ with secret "secret/data/' + path + '" }}{{ .Data.data.' + key + ' }}{{ end }}'


def _hcl(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def agent_config(config: Path, *, addr: str, token_file: Path, interval: str,
                 templates: Mapping[str, str], command: Sequence[str]) -> Path:
    """An OpenBao Agent configuration as in PEERS.md, written to ``config``: token_file
    auth, one ``env_template`` per variable (its contents: see :func:`kv_value`), exec
    mode restarting ``command`` on every change."""
    blocks = "".join(
        f"env_template {_hcl(name)} {{\n  contents = {_hcl(contents)}\n"
        "  error_on_missing_key = true\n}\n"
        for name, contents in templates.items()
    )
    config.write_text(
        f"vault {{ address = {_hcl(addr)} }}\n"
        "auto_auth {\n  method {\n    type = \"token_file\"\n"
        f"    config = {{ token_file_path = {_hcl(str(token_file))} }}\n  }}\n}}\n"
        "template_config {\n"
        f"  static_secret_render_interval = {_hcl(interval)}\n"
        "  exit_on_retry_failure = true\n}\n"
        f"{blocks}"
        f"exec {{\n  command = [{', '.join(_hcl(part) for part in command)}]\n"
        "  restart_on_secret_changes = \"always\"\n  restart_stop_signal = \"SIGTERM\"\n}\n"
    )
    return config

