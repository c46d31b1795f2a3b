"""AWS API calls and wall time for 45 Secrets Manager and 20 SSM references.

Runs the installed ``envwrap`` CLI against a moto server this script starts on
loopback. The calls are counted by a loopback proxy between envwrap and moto
(by ``X-Amz-Target``), so what is counted is what went over the wire.

    .venv/bin/python benchmarks/bench_aws.py [--runs N]
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testsupport.fixtures_aws import AwsProxy, MotoServer  # noqa: E402

SM_COUNT, SSM_COUNT = 45, 20
SM_BATCH, SSM_BATCH = 20, 10


def envwrap() -> list[str]:
    script = Path(sys.executable).parent / "envwrap"
    return [str(script)] if script.exists() else [sys.executable, "-m", "envwrap"]


def populate(server: MotoServer) -> dict[str, str]:
    refs = {}
    for i in range(SM_COUNT):
        server.sm.create_secret(Name=f"bench/sm/{i}", SecretString=f'{{"password": "p{i}"}}')
        refs[f"SM_{i}"] = f"aws-sm://bench/sm/{i}#password"
    for i in range(SSM_COUNT):
        server.ssm.put_parameter(Name=f"/bench/ssm/{i}", Value=f"v{i}", Type="SecureString")
        refs[f"SSM_{i}"] = f"aws-ssm:///bench/ssm/{i}"
    return refs


def run_once(env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [*envwrap(), "--no-env-file", "--", "true"], env=env, capture_output=True, text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"envwrap failed ({result.returncode}): {result.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = MotoServer(Path(tmp) / "moto.log")
        proxy = AwsProxy(server.endpoint)
        try:
            refs = populate(server)
            base = {"PATH": "/usr/bin:/bin", "HOME": tmp, "LANG": "C.UTF-8"}
            direct = {**base, **server.env, **refs}
            counted = {**direct, "AWS_ENDPOINT_URL": proxy.endpoint}

            run_once(counted)  # one run through the counting proxy
            counts = proxy.counts()
            total = sum(counts.values())
            target = math.ceil(SM_COUNT / SM_BATCH) + math.ceil(SSM_COUNT / SSM_BATCH)
            naive = SM_COUNT + SSM_COUNT

            run_once(direct)  # warm-up: page cache, moto's first-call costs
            walls = [run_once(direct) for _ in range(args.runs)]
            no_refs = [run_once({**base}) for _ in range(args.runs)]
        finally:
            proxy.close()
            server.stop()

    print(f"references: {SM_COUNT} aws-sm + {SSM_COUNT} aws-ssm")
    print(f"AWS API calls per run: {total} ({dict(sorted(counts.items()))})")
    print(f"  naive one call per reference: {naive}; target ceil(45/20)+ceil(20/10) = {target}")
    print(
        f"wall time, envwrap -- true, {args.runs} runs: median {statistics.median(walls) * 1000:.0f}"
        f" ms (min {min(walls) * 1000:.0f}, max {max(walls) * 1000:.0f})"
    )
    print(
        f"  same without references (no boto3 import): median "
        f"{statistics.median(no_refs) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
