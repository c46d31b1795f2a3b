"""Reading a large ``.env``: this checkout against another one (the commit before a change).

python-dotenv's own ``${VAR}`` expansion copies the whole environment for every line,
which is quadratic: 40,000 lines took 33 s. envwrap expands in place, in linear time.
Both envwraps run the same interpreter; ``--baseline-src`` is the ``src`` folder of the
other checkout (``git worktree add /tmp/base COMMIT``), run with ``PYTHONPATH``.

    python benchmarks/bench_dotenv.py --lines 50000 --baseline-src /tmp/base/src [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, report, time_command

ROOT = Path(__file__).resolve().parent.parent


def write_dotenv(path: Path, lines: int) -> None:
    """The Node team's variables, repeated; one line in ten expands an earlier one."""
    with path.open("w") as out:
        for i in range(lines):
            if i % 10 == 9:
                out.write(f"URL_{i}=postgres://${{USER_{i - 1}}}@db:5432/app\n")
            else:
                out.write(f"USER_{i}=user{i}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-src", help="src/ of the checkout to compare with")
    args = parser.parse_args()
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    command = [sys.executable, "-m", "envwrap", "--", "true"]
    with tempfile.TemporaryDirectory() as folder:
        write_dotenv(Path(folder, ".env"), args.lines)
        cases = {
            f"this checkout, {args.lines} lines": lambda: time_command(
                command, {**base_env, "PYTHONPATH": str(ROOT / "src")}, folder),
        }
        if args.baseline_src:
            cases[f"baseline, {args.lines} lines"] = lambda: time_command(
                command, {**base_env, "PYTHONPATH": args.baseline_src}, folder)
        samples = alternate(cases, args.runs, warmup=0)
    report(samples, next(iter(cases)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
