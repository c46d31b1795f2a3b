"""``--metrics``: scrape latency, idle CPU with a scrape a second, start-up without it.

1. ``/metrics`` scrape latency (a new connection per scrape, as a cold scraper
   would; median and p99) of ``envwrap --watch --metrics ... -- sleep`` with
   five file secrets.
2. envwrap's own CPU (its process and threads, not the child's) over
   ``--idle`` seconds (default 60) of idling with one scrape every second.
   Target <= 0.1% of a core.
3. Start-up of ``envwrap -- true`` (no --metrics) against the same run of the
   branch's base commit (``git merge-base HEAD main``, unpacked with git
   archive), alternating, medians: target ratio ~1.00 (unchanged). Both run as
   ``python SCRIPT -- true`` with only PYTHONPATH telling them apart.

    python benchmarks/bench_metrics.py [--runs 30] [--scrapes 300] [--idle 60]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, report, time_command, tool

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=5) as response:
        response.read()
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def serve(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    envwrap = tool("envwrap")
    assert envwrap, "envwrap is not installed"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    for i in range(5):
        (folder / f"s{i}").write_text(f"bench-value-{i}")
        env[f"SECRET_{i}"] = f"ref+file://{folder}/s{i}"
    port = free_port()
    process = subprocess.Popen(
        [envwrap, "--no-env-file", "--watch", "--metrics", f"127.0.0.1:{port}", "--",
         "sleep", "3600"],
        env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("envwrap --metrics did not become ready")
        time.sleep(0.05)
    return process, url


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def bench_server(scrapes: int, idle: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        process, url = serve(Path(folder))
        try:
            for _ in range(20):  # warm-up
                scrape(url + "/metrics")
            latencies = [scrape(url + "/metrics") for _ in range(scrapes)]
            print(f"/metrics scrape ({scrapes} scrapes, new connection each): "
                  f"median {statistics.median(latencies) * 1000:.2f} ms, "
                  f"p99 {percentile(latencies, 0.99) * 1000:.2f} ms")
            before, started = cpu_seconds(process.pid), time.monotonic()
            next_at = started
            while time.monotonic() - started < idle:
                next_at += 1.0
                scrape(url + "/metrics")
                time.sleep(max(0.0, next_at - time.monotonic()))
            used = cpu_seconds(process.pid) - before
            elapsed = time.monotonic() - started
            share = used / elapsed * 100
            print(f"envwrap CPU over {elapsed:.0f}s idle, one scrape a second: "
                  f"{used * 1000:.0f} ms = {share:.3f}% of a core (target <= 0.1%): "
                  f"{'met' if share <= 0.1 else 'NOT met'}")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(15)


def bench_startup(runs: int) -> None:
    base = subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=ROOT, capture_output=True,
                          text=True, check=False).stdout.strip()
    if not base:
        print("no merge-base with main; start-up comparison skipped")
        return
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    with tempfile.TemporaryDirectory() as baseline, tempfile.TemporaryDirectory() as empty:
        archive = subprocess.run(["git", "archive", base, "src", "bin"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", baseline], input=archive, check=True)
        script = str(ROOT / "bin" / "envwrap")
        cases = {
            "floor (python -c pass)": lambda: time_command(
                [sys.executable, "-c", "pass"], env, empty),
            f"envwrap -- true (base {base[:7]})": lambda: time_command(
                [sys.executable, f"{baseline}/bin/envwrap", "--", "true"],
                {**env, "PYTHONPATH": f"{baseline}/src"}, empty),
            "envwrap -- true (this branch)": lambda: time_command(
                [sys.executable, script, "--", "true"],
                {**env, "PYTHONPATH": str(ROOT / "src")}, empty),
        }
        samples = alternate(cases, runs)
    report(samples, f"envwrap -- true (base {base[:7]})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--scrapes", type=int, default=300)
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    bench_startup(args.runs)
    print()
    bench_server(args.scrapes, args.idle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
