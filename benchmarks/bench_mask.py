"""Throughput of --mask: a child writes N MB through the masked relay, or straight out.

    .venv/bin/python benchmarks/bench_mask.py [--mb 100] [--runs 5] [--secrets 5]

The child is ``python -c`` writing 1 MB buffers of log-like text with a few secret
occurrences per MB (the secrets reach it through its environment, as with envwrap).
Cases, run alternately, medians reported:

- direct:  the child writes to /dev/null itself (what envwrap without --mask costs)
- relay:   through MaskedOutput with no value to mask (the relay's own cost)
- masked:  through MaskedOutput masking the secrets, to /dev/null
- cli:     ``envwrap --mask -- CHILD > /dev/null``, the secrets given as ``ref+file://``
           references, against ``envwrap -- CHILD > /dev/null``; skipped with
           "CLI --mask not available yet" while the CLI path does not work.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from envwrap.mask import MaskedOutput

CHILD = r"""
import os, random, sys
mb, per_mb = int(sys.argv[1]), int(sys.argv[2])
secrets = [v for k, v in sorted(os.environ.items()) if k.startswith("BENCH_TOKEN_")]
rng = random.Random(7)
words = ["GET", "/api/v1/users", "200", "ms", "INFO", "request", "completed", "user_id=42",
         "latency", "worker-3", "DEBUG", "cache", "hit", "miss", "db", "query", "took"]
lines, size = [], 0
while size < (1 << 20):
    line = " ".join(rng.choice(words) for _ in range(10)) + " %08x\n" % rng.getrandbits(32)
    lines.append(line)
    size += len(line)
for i in range(per_mb if secrets else 0):
    at = rng.randrange(len(lines))
    lines[at] = "token=" + secrets[i % len(secrets)] + " " + lines[at]
buf = "".join(lines).encode()[: 1 << 20]
out = sys.stdout.buffer
for _ in range(mb):
    out.write(buf)
out.flush()
"""


def make_secrets(count: int) -> list[str]:
    rng = random.Random(1)
    alphabet = string.ascii_letters + string.digits
    return ["".join(rng.choices(alphabet, k=rng.randint(16, 64))) for _ in range(count)]


def child_argv(mb: int, per_mb: int) -> list[str]:
    return [sys.executable, "-c", CHILD, str(mb), str(per_mb)]


def child_env(secrets: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_TOKEN_")}
    env.update({f"BENCH_TOKEN_{i}": value for i, value in enumerate(secrets)})
    return env


def run_direct(mb: int, per_mb: int, secrets: list[str]) -> float:
    with open(os.devnull, "wb") as devnull:
        start = time.perf_counter()
        subprocess.run(child_argv(mb, per_mb), stdout=devnull, env=child_env(secrets), check=True)
        return time.perf_counter() - start


def run_relay(mb: int, per_mb: int, secrets: list[str], masked_values: list[str]) -> float:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        start = time.perf_counter()
        out = MaskedOutput(masked_values, stdout_fd=devnull, stderr_fd=2)
        proc = subprocess.Popen(
            child_argv(mb, per_mb),
            stdout=out.child_stdout_fd,
            stderr=out.child_stderr_fd,
            env=child_env(secrets),
        )
        out.close_child_ends()
        if proc.wait() != 0:
            raise SystemExit("child failed")
        if not out.join(60):
            raise SystemExit("relay did not finish")
        return time.perf_counter() - start
    finally:
        os.close(devnull)


def envwrap_argv() -> list[str]:
    script = Path(sys.executable).parent / "envwrap"
    return [str(script)] if script.exists() else [sys.executable, "-m", "envwrap"]


def run_cli(mb: int, per_mb: int, refs: dict[str, str], *, mask: bool) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_TOKEN_")}
    env.update(refs)
    argv = [
        *envwrap_argv(),
        "--no-env-file",
        *(["--mask"] if mask else []),
        "--",
        *child_argv(mb, per_mb),
    ]
    with open(os.devnull, "wb") as devnull:
        start = time.perf_counter()
        proc = subprocess.run(argv, stdout=devnull, stderr=subprocess.PIPE, env=env, check=False)
        elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode(errors="replace").strip()[-300:])
    return elapsed


def cli_masks(refs: dict[str, str], secrets: list[str]) -> bool:
    """Does ``envwrap --mask`` run and actually mask? (A 1 MB run, output captured.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_TOKEN_")}
    env.update(refs)
    argv = [*envwrap_argv(), "--no-env-file", "--mask", "--", *child_argv(1, 10)]
    try:
        proc = subprocess.run(argv, capture_output=True, env=env, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return False
    if proc.returncode != 0:
        return False
    return b"*****" in proc.stdout and not any(s.encode() in proc.stdout for s in secrets)


def median_rate(mb: int, times: list[float]) -> float:
    return mb / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--secrets", type=int, default=5, help="distinct secret values")
    parser.add_argument("--per-mb", type=int, default=4, help="secret occurrences per MB")
    args = parser.parse_args()
    mb, per_mb = args.mb, args.per_mb
    secrets = make_secrets(args.secrets)

    cases: dict[str, Callable[[], float]] = {
        "direct": lambda: run_direct(mb, per_mb, secrets),
        "relay": lambda: run_relay(mb, per_mb, secrets, []),
        "masked": lambda: run_relay(mb, per_mb, secrets, secrets),
    }
    with tempfile.TemporaryDirectory() as tmp:
        refs = {}
        for i, value in enumerate(secrets):
            path = Path(tmp) / f"token{i}"
            path.write_text(value)
            refs[f"BENCH_TOKEN_{i}"] = f"ref+file://{path}"
        if cli_masks(refs, secrets):
            cases["cli-plain"] = lambda: run_cli(mb, per_mb, refs, mask=False)
            cases["cli-mask"] = lambda: run_cli(mb, per_mb, refs, mask=True)
        else:
            print("CLI --mask not available yet")

        times: dict[str, list[float]] = {name: [] for name in cases}
        for name, case in cases.items():  # warm-up: page cache, .pyc
            case() if name != "direct" else None
        for _ in range(args.runs):
            for name, case in cases.items():
                times[name].append(case())

    print(
        f"{mb} MB, {args.secrets} secrets, {per_mb} occurrences/MB, "
        f"{args.runs} runs each (alternating), median wall time, {os.cpu_count()} CPUs"
    )
    rates = {name: median_rate(mb, t) for name, t in times.items()}
    for name, rate in rates.items():
        print(f"  {name:10s} {rate:8.0f} MB/s   ({statistics.median(times[name]):.3f} s)")
    print(f"  masked / direct = {rates['masked'] / rates['direct']:.2f}")
    if "cli-mask" in rates:
        print(f"  cli-mask / cli-plain = {rates['cli-mask'] / rates['cli-plain']:.2f}")


if __name__ == "__main__":
    main()
