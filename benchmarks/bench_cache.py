"""--cache: what the fallback cache costs a normal start, and a start while the store is down.

(a) ``envwrap -- true`` with 10 KV v2 references to 10 distinct paths, without
    ``--cache``, with it when the file already holds the same secrets (a
    restart: cryptography's import, a read and a decryption), and with it when
    there is no file (cryptography's import, HKDF, AES-GCM, the atomic 0600
    write with its two fsyncs). Target: <= 5 ms over the median without,
    measured in the same run. ``--dir /dev/shm`` puts the file on tmpfs (as a
    Kubernetes ``emptyDir`` with ``medium: Memory``), where fsync costs nothing.
(b) The same start with the store cut off (a loopback proxy that refuses
    connections) and ``--start-timeout 1s``: with a cache (the program starts
    from it) against without one (exit 69 after the same timeout).

Cases run alternately, round after round; medians are reported. The script
starts and stops its own OpenBao dev server.

    .venv/bin/python benchmarks/bench_cache.py [--runs N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import alternate, report  # noqa: E402
from testsupport.fixtures_vault import start_openbao  # noqa: E402
from testsupport.proxy import TcpProxy  # noqa: E402

REFS = 10


def envwrap() -> list[str]:
    script = Path(sys.executable).parent / "envwrap"
    return [str(script)] if script.exists() else [sys.executable, "-m", "envwrap"]


#: CPU seconds (user + system) of every timed run, by case: less sensitive than wall
#: time to the other load on a shared machine
CPU: dict[str, list[float]] = {}


def timed(name: str, argv: Sequence[str], env: Mapping[str, str], expect: int) -> float:
    """Wall seconds of one run, spawn to reaped exit; fails unless it exits ``expect``."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
        started = time.perf_counter()
        pid = os.posix_spawnp(argv[0], list(argv), dict(env), file_actions=actions)
        _, status, usage = os.wait4(pid, 0)
        elapsed = time.perf_counter() - started
    finally:
        os.close(devnull)
    code = os.waitstatus_to_exitcode(status)
    if code != expect:
        raise RuntimeError(f"{argv} exited with {code}, expected {expect}")
    CPU.setdefault(name, []).append(usage.ru_utime + usage.ru_stime)
    return elapsed


#: one cold write, in a fresh process that has loaded what a Vault start loads
WRITE_ONCE = """
import sys, time
import hvac  # what a start with Vault references has loaded by then
from envwrap.backends import Fetched
from envwrap.cache.fallback import FallbackCache
from envwrap.refs import Locator
cache = FallbackCache(sys.argv[1], b"k" * 44, 86400)
fetched = {Locator("vault", f"secret/bench/s{i}"): Fetched({"value": "x" * 32}, "1")
           for i in range(10)}
started = time.perf_counter()
if sys.argv[2] == "write":
    cache.save(fetched)
else:  # what a start with unchanged secrets does instead
    assert cache.holds_recent(fetched)
print(time.perf_counter() - started)
"""


def cold(path: str, action: str, runs: int) -> list[float]:
    """``runs`` fresh processes each doing one ``action`` (write / read); seconds each."""
    import subprocess

    return [float(subprocess.run([sys.executable, "-c", WRITE_ONCE, path, action], check=True,
                                 capture_output=True, text=True).stdout) for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--down-runs", type=int, default=8)
    parser.add_argument("--dir", help="where the cache file goes (default: a temporary folder)")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        folder = Path(options.dir) if options.dir else work / "cache"
        folder.mkdir(parents=True, exist_ok=True)
        server = start_openbao(work / "openbao")
        proxy = TcpProxy(int(server.addr.rsplit(":", 1)[1]))
        try:
            key = work / "key"
            key.write_text(secrets.token_urlsafe(32))
            key.chmod(0o600)  # a key file others may read is refused
            env = {"PATH": os.environ["PATH"], **server.env(VAULT_ADDR=proxy.url)}
            for i in range(REFS):
                server.kv2_put(f"bench/s{i}", {"value": secrets.token_hex(16)})
                env[f"V{i}"] = f"vault://secret/bench/s{i}#value"
            base = [*envwrap(), "--no-env-file", "--start-timeout", "1s"]
            cache = str(folder / "secrets.bin")
            with_cache = [*base, "--cache", cache, "--cache-key-file", str(key)]
            command = ["--", "true"]

            print(f"(a) a normal start, {REFS} KV v2 references, {options.runs} rounds; "
                  f"cache in {folder}")
            def writing() -> float:
                Path(cache).unlink(missing_ok=True)  # no file: this start writes one
                return timed("writing", [*with_cache, *command], env, 0)

            samples = alternate({
                "without --cache": lambda: timed("without", [*base, *command], env, 0),
                "--cache, file kept": lambda: timed("kept", [*with_cache, *command], env, 0),
                "--cache, file written": writing,
            }, runs=options.runs)
            report(samples, "without --cache")
            for case, name in (("--cache, file kept", "kept"), ("--cache, file written", "writing")):
                added = (statistics.median(samples[case])
                         - statistics.median(samples["without --cache"])) * 1000
                cpu = (statistics.median(CPU[name]) - statistics.median(CPU["without"])) * 1000
                print(f"added by {case}: {added:+.1f} ms wall, {cpu:+.1f} ms CPU (medians; "
                      "target <= 5 ms)")
            for action, what in (("write", "a write (cryptography's import included)"),
                                 ("check", "the check of a kept file")):
                alone = cold(str(folder / "alone.bin"), action, options.runs)
                print(f"{what}, alone in a fresh process: "
                      f"{statistics.median(alone) * 1000:.2f} ms median, "
                      f"{min(alone) * 1000:.2f} ms min")
            print()

            proxy.cut()
            print(f"(b) the store down, --start-timeout 1s, {options.down_runs} rounds")
            down = alternate({
                "no cache (exit 69)": lambda: timed("down", [*base, *command], env, 69),
                "from the cache (exit 0)": lambda: timed("cached", [*with_cache, *command],
                                                         env, 0),
            }, runs=options.down_runs, warmup=1)
            report(down, "no cache (exit 69)")
        finally:
            proxy.close()
            server.stop()


if __name__ == "__main__":
    main()
