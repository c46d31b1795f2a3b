"""Start-up and size of the self-contained bundle against the pip-installed envwrap.

Cases, alternating, medians (issue 15):
  pip          the pip-installed `envwrap -- true` (this venv's): the baseline
  bundle       OUTDIR/envwrap -- true, scripts/bundle.sh as shipped (libpython
               linked into the launcher, sourceless .pyc)
with --variants, the bundle's other build choices:
  bundle/shared-libpython   libpython loaded from lib/ instead of linked in
  bundle/sources+hash-pyc   sources kept, unchecked-hash __pycache__/*.pyc
with --pyinstaller, the alternative method: a PyInstaller onedir build of the
same packages (pyinstaller is installed from PyPI into a cached virtualenv).
Targets: bundle / pip <= 1.5; bundle <= 60 MiB.

Measured on the 2-core machine, loaded by other jobs (40 runs, medians):
  pip 19.9 ms; bundle 15.2 ms (0.77x), 47.9 MiB; shared libpython 16.7 ms
  (0.84x), 48.0 MiB; sources + hash .pyc 15.6 ms (0.79x), 62.5 MiB;
  PyInstaller onedir 85.9 ms (4.32x), 78.9 MiB (botocore's data untrimmed).

    python benchmarks/bench_bundle.py [--runs N] [--variants] [--pyinstaller]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, report, time_command, tool

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("ENVWRAP_BUNDLE_CACHE", Path.home() / ".cache" / "envwrap-bundle"))
VARIANTS = {
    "bundle/shared-libpython": {"ENVWRAP_BUNDLE_LINK": "shared"},
    "bundle/sources+hash-pyc": {"ENVWRAP_BUNDLE_BYTECODE": "hash"},
}
MAIN = "import sys\nfrom envwrap.cli import main\nsys.exit(main())\n"


def size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


def build_bundle(out: Path, **variant: str) -> Path:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "bundle.sh"), str(out)],
        env={**os.environ, **variant}, check=True, capture_output=True,
    )
    return out / "envwrap"


def build_pyinstaller(work: Path) -> Path:
    """PyInstaller onedir of envwrap with every backend, botocore's data untrimmed
    (PyInstaller has no notion of which service models envwrap loads)."""
    venv = CACHE / "pyinstaller-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "pyinstaller", f"{ROOT}[all]",
         "prometheus_client", "cryptography"],
        check=True, capture_output=True,
    )
    work.mkdir(parents=True, exist_ok=True)
    script = work / "envwrap_main.py"
    script.write_text(MAIN)
    hidden = ["certifi", "boto3", "watchdog.observers", "psutil", "dotenv",
              "prometheus_client", "cryptography"]
    subprocess.run(
        [str(venv / "bin" / "pyinstaller"), "--onedir", "--noconfirm", "--log-level", "ERROR",
         "--name", "envwrap", "--distpath", str(work / "dist"), "--workpath", str(work / "build"),
         "--specpath", str(work), "--collect-submodules", "envwrap",
         "--collect-data", "botocore", "--collect-data", "boto3",
         *[arg for name in hidden for arg in ("--hidden-import", name)], str(script)],
        check=True, capture_output=True,
    )
    return work / "dist" / "envwrap" / "envwrap"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--variants", action="store_true", help="also the bundle's other build choices")
    parser.add_argument("--pyinstaller", action="store_true", help="also a PyInstaller onedir build")
    args = parser.parse_args()
    envwrap = tool("envwrap")
    assert envwrap, "envwrap is not installed"
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as empty:
        commands = {"pip": envwrap, "bundle": str(build_bundle(Path(tmp, "bundle")))}
        if args.variants:
            for name, variant in VARIANTS.items():
                commands[name] = str(build_bundle(Path(tmp, name.replace("/", "-")), **variant))
        if args.pyinstaller:
            commands["pyinstaller onedir"] = str(build_pyinstaller(Path(tmp, "pyinstaller")))
        cases = {
            f"{name} -- true": (lambda c=command: time_command([c, "--", "true"], env, empty))
            for name, command in commands.items()
        }
        samples = alternate(cases, args.runs)
        report(samples, "pip -- true")
        print()
        for name, command in commands.items():
            if name != "pip":
                print(f"size of {name}: {size_mib(Path(command).parent):.1f} MiB")
    ratio = statistics.median(samples["bundle -- true"]) / statistics.median(samples["pip -- true"])
    print(f"\nbundle / pip start-up: {ratio:.2f}x (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
