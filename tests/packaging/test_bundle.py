"""The bundle (scripts/bundle.sh) in an image with no Python: a chroot holding
only glibc, a static busybox and the bundle. Built once per session; the slow
part of the build is cached across runs (scripts/bundle/build.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from testsupport import ROOT
from testsupport.helpers import LineCollector, assert_not_leaked, canary

pytestmark = pytest.mark.slow

BUSYBOX = Path("/bin/busybox")
# What the image must provide: glibc, nothing else. Anything more is the bundle's job.
GLIBC = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "ld-linux-x86-64.so.2"}
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
APPLETS = ["sh", "true", "cat", "cp", "mkdir", "env", "kill"]


def _elf_files(top: Path) -> list[Path]:
    return [p for p in top.rglob("*") if p.is_file() and p.read_bytes()[:4] == b"\x7fELF"]


def _system_libraries(bundle: Path) -> dict[str, Path]:
    """Libraries the bundle's binaries load from outside the bundle, by name."""
    found: dict[str, Path] = {}
    for file in _elf_files(bundle):
        for line in subprocess.run(["ldd", str(file)], capture_output=True, text=True).stdout.splitlines():
            match = re.match(r"\s*(\S+) => (/\S+)", line) or re.match(r"\s*(/\S+/(ld-linux\S+))", line)
            if not match:
                continue
            if match.re.pattern.startswith(r"\s*(/"):
                path, name = Path(match.group(1)), match.group(2)
            else:
                name, path = match.group(1), Path(match.group(2))
            if not path.is_relative_to(bundle):
                found[name] = path
    return found


@dataclass
class Image:
    root: Path

    def run(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CHROOT, str(self.root), *argv],
            env={"PATH": "/bin", "HOME": "/tmp", **(env or {})},
            capture_output=True, text=True, timeout=120, check=False,
        )

    def start(self, *argv: str, env: dict[str, str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [CHROOT, str(self.root), *argv],
            env={"PATH": "/bin", "HOME": "/tmp", **env},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )


@pytest.fixture(scope="session")
def image(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    if os.geteuid() != 0:
        pytest.skip("chroot needs root (CI runs as root)")
    assert BUSYBOX.exists(), "no static busybox: scripts/setup.sh installs busybox-static"
    root = tmp_path_factory.mktemp("image")
    system = _system_libraries(bundle)
    assert set(system) <= GLIBC, f"the bundle needs more than glibc: {sorted(set(system) - GLIBC)}"
    for path in system.values():
        (root / path.relative_to("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path.resolve(), root / path.relative_to("/"))
    (root / "bin").mkdir()
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "tmp").mkdir()
    (root / "dev").mkdir()
    os.mknod(root / "dev" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    shutil.copytree(bundle, root / "opt" / "envwrap", symlinks=True)
    assert not [p for p in root.rglob("python3*") if p.is_file()], "the image must hold no Python"
    # Real images have /proc (the launcher finds its folder through /proc/self/exe);
    # where mounting is refused it falls back to the path it was run by.
    (root / "proc").mkdir()
    mounted = subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=False).returncode == 0
    try:
        yield Image(root)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(root / "proc")], check=False)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_version_from_the_bundle_and_from_a_copy_elsewhere(image: Image) -> None:
    assert image.run("/opt/envwrap/envwrap", "--version").stdout.startswith("envwrap ")
    copied = image.run("/bin/cp", "-r", "/opt/envwrap", "/tmp/moved")
    assert copied.returncode == 0, copied.stderr
    shutil.rmtree(image.root / "opt" / "envwrap" / "lib", ignore_errors=False)
    (image.root / "bin" / "envwrap").symlink_to("/tmp/moved/envwrap")  # as images link it
    try:
        for command in ("/tmp/moved/envwrap", "envwrap"):
            result = image.run(command, "--version")
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith("envwrap ")
    finally:
        (image.root / "bin" / "envwrap").unlink()
        shutil.copytree(image.root / "tmp" / "moved" / "lib", image.root / "opt" / "envwrap" / "lib", symlinks=True)


def test_the_image_python_settings_cannot_change_what_runs(image: Image) -> None:
    """PYTHONPATH, PYTHONHOME and the current folder are ignored: an application
    image's own Python setup (or a file named like a module) cannot hijack envwrap."""
    evil = image.root / "tmp" / "evil"
    (evil / "envwrap").mkdir(parents=True, exist_ok=True)
    for module in ("envwrap/__init__.py", "os.py", "certifi.py"):
        (evil / module).write_text('raise SystemExit("hijacked")\n')
    result = image.run(
        "sh", "-c", "cd /tmp/evil && /opt/envwrap/envwrap --version",
        env={"PYTHONPATH": "/tmp/evil", "PYTHONHOME": "/nonexistent", "PYTHONSTARTUP": "/tmp/evil/os.py"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("envwrap ") and "hijacked" not in result.stderr


IMPORTS = """
import ssl, hashlib, lzma, bz2, zlib, ctypes, uuid, json, http.client
import dotenv, certifi, boto3, psutil, watchdog.observers, prometheus_client
from cryptography.fernet import Fernet
key = Fernet.generate_key()
assert Fernet(key).decrypt(Fernet(key).encrypt(b"x")) == b"x"
for service in ("secretsmanager", "ssm", "sts", "sso", "sso-oidc", "signin"):
    boto3.client(service, region_name="us-east-1")
print("ok")
"""


def test_every_extra_loads_from_the_trimmed_library(bundle: Path) -> None:
    """What the trimming kept is enough for every extra's package, and for every
    botocore client envwrap or the credential chain creates. The launcher runs only
    envwrap, so the CPython that built the bundle is pointed at its library."""
    base = Path(sys.executable).resolve()
    result = subprocess.run(
        [str(base), "-S", "-c", IMPORTS],
        env={"PYTHONHOME": str(bundle), "PYTHONPATH": str(bundle / "lib" / f"python{_python_version(bundle)}" / "site-packages"),
             "PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "ok\n"


def test_bundle_fits_its_size_budget(bundle: Path) -> None:
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file() and not p.is_symlink())
    assert size <= 60 * 2**20, f"{size / 2**20:.1f} MiB"


def test_shared_libpython_variant_runs_in_the_image(  # type: ignore[no-untyped-def]
    image: Image, openbao, tmp_path: Path
) -> None:
    """The build for CPythons that ship no libpython3.X.a (the python:3.x images)."""
    out = image.root / "opt" / "shared"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bundle.sh"), str(out)],
        env={**os.environ, "ENVWRAP_BUNDLE_LINK": "shared"},
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "lib" / f"libpython{_python_version(out)}.so.1.0").exists()
    value = canary("bundle-shared")
    openbao.kv2_put("bundle-shared", {"password": value})
    try:
        ran = image.run(
            "/opt/shared/envwrap", "--", "sh", "-c", 'echo "v=$V"',
            env={**openbao.env(), "V": "vault://secret/bundle-shared#password"},
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == f"v={value}\n"
        assert_not_leaked(value, ran.stderr)
    finally:
        shutil.rmtree(out)


def _python_version(bundle: Path) -> str:
    (pylib,) = (bundle / "lib").glob("python3.*")
    return pylib.name.removeprefix("python")


def test_file_reference_reaches_sh_and_not_envwrap_stderr(image: Image) -> None:
    value = canary("bundle-file")
    (image.root / "tmp" / "db-password").write_text(value)
    result = image.run(
        "/opt/envwrap/envwrap", "--log-level", "debug", "--",
        "sh", "-c", 'echo "child got $DB_PASSWORD"; echo "child err" >&2',
        env={"DB_PASSWORD": "ref+file:///tmp/db-password"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"child got {value}\n"
    assert "child err" in result.stderr
    assert_not_leaked(value, result.stderr)


def test_init_passes_on_exit_code_and_signal_death(image: Image) -> None:
    assert image.run("/opt/envwrap/envwrap", "--init", "--", "sh", "-c", "exit 7").returncode == 7
    killed = image.run("/opt/envwrap/envwrap", "--init", "--", "sh", "-c", "kill -TERM $$")
    assert killed.returncode == 128 + 15, killed.stderr


@pytest.mark.parametrize(
    ("reference", "settings"),
    [
        ("vault://secret/app#password", lambda port: {
            "VAULT_ADDR": f"http://127.0.0.1:{port}", "VAULT_TOKEN": "unused"}),
        ("aws-sm://app#password", lambda port: {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_REGION": "eu-west-1",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true"}),
    ],
    ids=["vault", "aws"],
)
def test_unreachable_store_is_69_not_a_missing_extra(image: Image, reference: str, settings) -> None:  # type: ignore[no-untyped-def]
    result = image.run(
        "/opt/envwrap/envwrap", "--start-timeout", "1s", "--", "true",
        env={"DB_PASSWORD": reference, **settings(closed_port())},
    )
    assert result.returncode == 69, result.stderr
    assert "unreachable" in result.stderr
    assert "pip install" not in result.stderr and "Traceback" not in result.stderr


def test_vault_and_aws_secrets_reach_sh(image: Image, openbao, moto_server) -> None:  # type: ignore[no-untyped-def]
    vault_value, aws_value = canary("bundle-vault"), canary("bundle-aws")
    openbao.kv2_put("bundle", {"password": vault_value})
    moto_server.sm.create_secret(Name=f"bundle-{aws_value[-6:]}", SecretString=aws_value)
    result = image.run(
        "/opt/envwrap/envwrap", "--", "sh", "-c", 'echo "$V $A"',
        env={
            **openbao.env(), **moto_server.env,
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "V": "vault://secret/bundle#password", "A": f"aws-sm://bundle-{aws_value[-6:]}",
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{vault_value} {aws_value}\n"
    assert_not_leaked(vault_value, result.stderr)
    assert_not_leaked(aws_value, result.stderr)


def test_watch_applies_a_rotated_file_secret_with_watchdog(image: Image) -> None:
    first, second = canary("bundle-rot1"), canary("bundle-rot2")
    secret = image.root / "tmp" / "rotating"
    secret.write_text(first)
    proc = image.start(
        "/opt/envwrap/envwrap", "--watch", "--", "sh", "-c", 'echo "v=$S"; exec sleep 300',
        env={"S": "ref+file:///tmp/rotating"},
    )
    assert proc.stdout and proc.stderr
    out, err = LineCollector(proc.stdout), LineCollector(proc.stderr)
    try:
        out.wait_for(f"v={first}", timeout=60)
        (image.root / "tmp" / "rotating.new").write_text(second)
        os.replace(image.root / "tmp" / "rotating.new", secret)
        out.wait_for(f"v={second}", timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    stderr = err.join()
    assert "watchdog is not installed" not in stderr
    assert_not_leaked(first, stderr)
    assert_not_leaked(second, stderr)


# --- the AWS credential chain with botocore's models trimmed -----------------------


class _Metadata(BaseHTTPRequestHandler):
    """ECS/EKS container credentials and EC2 instance metadata (IMDSv2), faked."""

    hits: list[str]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, body: str) -> None:
        self.hits.append(self.path)
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:  # IMDSv2 session token
        self._send("imds-session-token")

    def do_GET(self) -> None:
        expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        creds = {"AccessKeyId": "testing", "SecretAccessKey": "testing", "Token": "t",
                 "Expiration": expires, "Code": "Success"}
        if self.path.endswith("/security-credentials/"):
            self._send("app-role")
        else:
            self._send(json.dumps(creds))


@pytest.fixture
def metadata() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    handler = type("Handler", (_Metadata,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("link", ["shared-file", "web-identity", "container", "instance-metadata"])
def test_aws_credential_chain_works_in_the_bundle(  # type: ignore[no-untyped-def]
    image: Image, aws, aws_proxy, metadata, link: str
) -> None:
    value = canary(f"bundle-{link}")
    aws.sm.create_secret(Name="chain", SecretString=value)
    url, hits = metadata
    env = {
        "AWS_ENDPOINT_URL": aws_proxy.endpoint, "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true", "X": "aws-sm://chain",
    }
    if link == "shared-file":
        (image.root / "tmp" / "credentials").write_text(
            "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
        env["AWS_SHARED_CREDENTIALS_FILE"] = "/tmp/credentials"
    elif link == "web-identity":  # EKS IRSA: a projected token, exchanged with STS
        (image.root / "tmp" / "token").write_text("eyJhbGciOiJub25lIn0.e30.")
        env |= {"AWS_WEB_IDENTITY_TOKEN_FILE": "/tmp/token",
                "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/app"}
    elif link == "container":
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = f"{url}/creds"
    else:
        env |= {"AWS_EC2_METADATA_DISABLED": "false", "AWS_EC2_METADATA_SERVICE_ENDPOINT": url}
    result = image.run("/opt/envwrap/envwrap", "--", "sh", "-c", 'echo "x=$X"', env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"x={value}\n"
    assert_not_leaked(value, result.stderr)
    if link == "web-identity":
        assert "" in [r.operation for r in aws_proxy.since()], aws_proxy.calls  # STS: query protocol
    if link in ("container", "instance-metadata"):
        assert hits, "the credentials did not come from the metadata endpoint"


def test_the_dockerfile_bundle_stage_holds_all_the_build_needs(tmp_path: Path) -> None:
    """Replays Dockerfile.sidecar's bundle-build stage (its COPY lines, then its RUN)
    in an empty folder: a file the build reads but the stage does not copy fails here."""
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(fileobj=(ROOT / "Dockerfile.sidecar").open("rb"))  # type: ignore[arg-type]
    stage, work, runs = "", tmp_path / "context", []
    for item in parser.structure:
        words = item["value"].split()
        if item["instruction"] == "FROM":
            stage = words[-1] if len(words) == 3 else ""
        elif stage != "bundle-build":
            continue
        elif item["instruction"] == "COPY":
            *sources, dest = words
            for source in sources:
                target = work / dest / Path(source).name if dest.endswith("/") else work / dest
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / source, target)
        elif item["instruction"] == "RUN":
            runs.append(item["value"].replace("/opt/envwrap", str(tmp_path / "out")))
    assert runs == [f"bash scripts/bundle.sh {tmp_path / 'out'}"]
    result = subprocess.run(["bash", "-c", runs[0]], cwd=work, capture_output=True, text=True,
                            timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert subprocess.run([str(tmp_path / "out" / "envwrap"), "--version"], capture_output=True,
                          text=True, check=True).stdout.startswith("envwrap ")
