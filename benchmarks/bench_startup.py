"""Start-up cost of ``envwrap -- true`` against the floor and python-dotenv.

Cases, alternating, medians (issue 2):
  floor        python3 -c pass (the same interpreter envwrap runs on)
  envwrap      envwrap -- true, no .env, no references
  envwrap+.env envwrap -- true with a .env of the user's variables
  dotenv run   python-dotenv's own `dotenv run -- true` with the same .env
Targets: envwrap / floor <= 1.5; envwrap faster than `dotenv run`.

    python benchmarks/bench_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, report, time_command, tool

DOTENV = """\
AT_USERNAME=sandbox
AT_API_KEY=your_api_key
AT_ENVIRONMENT=sandbox
PORT=3001
NODE_ENV=development
DATABASE_URL=postgresql://user:password@localhost:5432/workflows
JWT_SECRET=your_jwt_secret
JWT_EXPIRES_IN=15m
REDIS_URL=redis://localhost:6379
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    envwrap, dotenv = tool("envwrap"), tool("dotenv")
    assert envwrap, "envwrap is not installed"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory() as with_env:
        Path(with_env, ".env").write_text(DOTENV)
        cases = {
            "floor (python -c pass)": lambda: time_command([sys.executable, "-c", "pass"], env, empty),
            "envwrap -- true": lambda: time_command([envwrap, "--", "true"], env, empty),
            "envwrap -- true (.env)": lambda: time_command([envwrap, "--", "true"], env, with_env),
        }
        if dotenv:
            cases["dotenv run -- true (.env)"] = lambda: time_command(
                [dotenv, "run", "--", "true"], env, with_env)
        else:
            print("python-dotenv's CLI is not installed (pip install 'python-dotenv[cli]'); skipped")
        samples = alternate(cases, args.runs)
    report(samples, "floor (python -c pass)")
    floor = statistics.median(samples["floor (python -c pass)"])
    bare = statistics.median(samples["envwrap -- true"])
    print(f"\nenvwrap / floor = {bare / floor:.2f} (target <= 1.5): "
          f"{'met' if bare / floor <= 1.5 else 'NOT met'}")
    if dotenv:
        dotenv_run = statistics.median(samples["dotenv run -- true (.env)"])
        with_file = statistics.median(samples["envwrap -- true (.env)"])
        print(f"envwrap (.env) / dotenv run = {with_file / dotenv_run:.2f} (target < 1): "
              f"{'met' if with_file < dotenv_run else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
