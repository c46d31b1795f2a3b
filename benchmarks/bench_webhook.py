"""``envwrap webhook``: /mutate latency under 50 concurrent clients, and its memory.

Starts ``envwrap webhook`` (the pip-installed command of this venv) with a
self-signed certificate, then 50 clients (5 processes x 10 threads, so that the
clients' own GIL does not dominate what is measured) each post the same
opted-in pod's AdmissionReview ``--requests`` times over one kept-alive HTTPS
connection, as the API server does (it reuses connections), plus a round with
a new TLS connection per request (the worst case: every call pays a
handshake). Those two rounds are back to back (closed loop: the latency is
mostly queueing behind the other 49); two more are paced (``--rate`` per
client, 250/s in all by default -- far more pod creations than a cluster sees). Reports p50/p99/max per round, the webhook's RSS after each round
and its peak (VmHWM). Kubernetes' default webhook timeout is 10 s; the target
is p99 under 20 ms.

    python benchmarks/bench_webhook.py [--clients 50] [--requests 100] [--rate 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testsupport.webhook import pod, review, self_signed, server_container  # noqa: E402

PROCESSES = 5


@dataclass(frozen=True)
class Load:
    port: int
    cafile: str
    body: bytes
    requests: int  # per client
    fresh: bool  # a new TLS connection per request
    interval: float = 0.0  # per client, between request starts: 0 = back to back


class _NoDelayConnection(http.client.HTTPSConnection):
    """As Go's HTTP client (the API server's) connects: TCP_NODELAY on."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _client(load: Load, out: list[float]) -> None:
    context = ssl.create_default_context(cafile=load.cafile)
    conn = _NoDelayConnection("127.0.0.1", load.port, timeout=30, context=context)
    next_start = time.perf_counter()
    for _ in range(load.requests):
        if load.interval:
            next_start += load.interval
            time.sleep(max(0.0, next_start - time.perf_counter()))
        started = time.perf_counter()
        conn.request("POST", "/mutate", body=load.body,
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        out.append(time.perf_counter() - started)
        assert response.status == 200 and b'"patch"' in data, data[:200]
        if load.fresh:
            conn.close()
    conn.close()


def _process(load: Load, threads: int, start: object, results: object) -> None:
    latencies: list[float] = []
    workers = [threading.Thread(target=_client, args=(load, latencies)) for _ in range(threads)]
    start.wait()  # type: ignore[attr-defined]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(latencies)  # type: ignore[attr-defined]


def round_(load: Load, clients: int) -> tuple[list[float], float]:
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    per = [clients // PROCESSES + (1 if i < clients % PROCESSES else 0) for i in range(PROCESSES)]
    procs = [context.Process(target=_process, args=(load, n, start, results)) for n in per if n]
    for proc in procs:
        proc.start()
    began = time.perf_counter()
    start.set()
    latencies: list[float] = []
    for _ in procs:
        latencies += results.get(timeout=600)
    wall = time.perf_counter() - began
    for proc in procs:
        proc.join()
    return sorted(latencies), wall


def memory(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
            for key in ("VmRSS", "VmHWM")}


def report(label: str, latencies: list[float], wall: float, pid: int) -> None:
    ms = [x * 1000 for x in latencies]
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    mem = memory(pid)
    print(f"{label}: {len(ms)} requests in {wall:.1f} s ({len(ms) / wall:.0f}/s); "
          f"p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms; "
          f"webhook RSS {mem['VmRSS'] / 1024:.1f} MiB (peak {mem['VmHWM'] / 1024:.1f} MiB)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=100, help="per client and round")
    parser.add_argument("--rate", type=float, default=5.0,
                        help="requests per second per client in the paced rounds")
    args = parser.parse_args()
    envwrap = Path(sys.executable).parent / "envwrap"
    body = json.dumps(review(pod(server_container(), annotations={
        "envwrap/options": "--watch --on-change handoff --listen :3001 --ready notify"}))).encode()
    with tempfile.TemporaryDirectory() as folder:
        cert, key = self_signed(Path(folder))
        proc = subprocess.Popen(
            [str(envwrap), "webhook", "--listen", "127.0.0.1:0", "--tls-cert", str(cert),
             "--tls-key", str(key), "--image", "envwrap-bundle:bench", "--log-level", "info"],
            stderr=subprocess.PIPE, text=True,
        )
        assert proc.stderr
        line = proc.stderr.readline()
        match = re.search(r":(\d+)/mutate", line)
        assert match, line
        port = int(match.group(1))
        # the request log lines: drained, not measured
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
        try:
            idle = memory(proc.pid)
            print(f"webhook idle RSS {idle['VmRSS'] / 1024:.1f} MiB; {args.clients} clients x "
                  f"{args.requests} requests, {len(body)} byte AdmissionReview")
            paced = 1 / args.rate
            for label, fresh, interval in (
                ("back to back, kept-alive connections", False, 0.0),
                ("back to back, new TLS connection per request", True, 0.0),
                (f"paced at {args.rate:g}/s per client, kept-alive", False, paced),
                (f"paced at {args.rate:g}/s per client, new TLS connection each", True, paced),
            ):
                load = Load(port, str(cert), body, args.requests, fresh, interval)
                latencies, wall = round_(load, args.clients)
                report(label, latencies, wall, proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
