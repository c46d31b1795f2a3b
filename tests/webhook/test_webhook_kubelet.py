"""The mutated pod run as a kubelet would: the init container in the bundle image,
the application container in an image with no envwrap and no Python, sharing only
the volume the init container filled.

Each "image" is a chroot holding glibc and a static busybox (as tests/test_bundle.py
builds them); the emptyDir is a host folder bind-mounted into both, read-only in the
application's, as the pod spec mounts it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport import envwrap_command
from testsupport.helpers import assert_not_leaked, canary
from testsupport.webhook import Webhook, apply, pod, review, validate

pytestmark = pytest.mark.slow

BUSYBOX = Path("/bin/busybox")
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


def _glibc(bundle: Path) -> set[Path]:
    """The system libraries the bundle loads (glibc only: tests/test_bundle.py checks that)."""
    found: set[Path] = set()
    for file in (bundle / "envwrap", *bundle.rglob("*.so*")):
        if not file.is_file() or file.read_bytes()[:4] != b"\x7fELF":
            continue
        listing = subprocess.run(["ldd", str(file)], capture_output=True, text=True).stdout
        for line in listing.splitlines():
            match = re.search(r"(/\S+)", line)
            if match and not Path(match.group(1)).is_relative_to(bundle):
                found.add(Path(match.group(1)))
    return found


def _image(root: Path, libraries: set[Path]) -> Path:
    for path in libraries:
        (root / path.relative_to("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path.resolve(), root / path.relative_to("/"))
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    for applet in ("sh", "cat", "echo", "ls"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "tmp").mkdir(mode=0o1777)
    (root / "envwrap").mkdir()
    return root


class Pod:
    def __init__(self, bundle_image: Path, app_image: Path, volume: Path) -> None:
        self.bundle_image = bundle_image
        self.app_image = app_image
        self.volume = volume

    @staticmethod
    def run(root: Path, user: str, container: dict[str, object]) -> subprocess.CompletedProcess[str]:
        """A container's command in ``root`` as ``user``, with its spec's env and PATH=/bin."""
        env = {"PATH": "/bin", "HOME": "/tmp"}
        for item in container.get("env", []):  # type: ignore[attr-defined]
            env[item["name"]] = item["value"]
        command = [str(word) for word in container["command"]]  # type: ignore[attr-defined]
        return subprocess.run([CHROOT, f"--userspec={user}", str(root), *command], env=env,
                              capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def kubelet_pod(bundle: Path, tmp_path: Path) -> Iterator[Pod]:
    if os.geteuid() != 0:
        pytest.skip("chroot and bind mounts need root (CI runs as root)")
    assert BUSYBOX.exists(), "no static busybox: scripts/setup.sh installs busybox-static"
    libraries = _glibc(bundle)
    bundle_image = _image(tmp_path / "bundle-image", libraries)
    shutil.copytree(bundle, bundle_image / "opt" / "envwrap", symlinks=True)
    app_image = _image(tmp_path / "app-image", libraries)
    assert not list(app_image.rglob("python3*")) and not list(app_image.rglob("envwrap*"))[1:]
    volume = tmp_path / "emptydir"
    volume.mkdir()
    volume.chmod(0o777)  # as the kubelet creates an emptyDir
    mounted: list[Path] = []
    try:
        for target in (bundle_image / "envwrap", app_image / "envwrap"):
            subprocess.run(["mount", "--bind", str(volume), str(target)], check=True)
            mounted.append(target)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(app_image / "envwrap")], check=True)
        yield Pod(bundle_image, app_image, volume)
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)


def test_the_mutated_pod_runs_and_the_app_prints_its_secret(
        webhook: Webhook, kubelet_pod: Pod) -> None:
    value = canary("webhook-kubelet")
    secret = kubelet_pod.app_image / "etc" / "secret"
    secret.mkdir(parents=True)
    (secret / "password").write_text(value)  # a Kubernetes secret volume, as a file
    (secret / "password").chmod(0o644)
    spec = pod({
        "name": "app", "image": "registry.example.com/plain-busybox:1",
        "command": ["sh", "-c"], "args": ['echo "secret=$DB_PASSWORD"'],
        "env": [{"name": "DB_PASSWORD", "value": "ref+file:///etc/secret/password"}],
        "securityContext": {"runAsUser": 1000, "runAsNonRoot": True,
                            "readOnlyRootFilesystem": True},
    }, annotations={"envwrap/options": "--log-level info"})
    mutated = apply(spec, webhook.mutate(review(spec)))
    validate(mutated)
    (installer,) = mutated["spec"]["initContainers"]  # type: ignore[index]
    (app,) = mutated["spec"]["containers"]  # type: ignore[index]

    installed = Pod.run(kubelet_pod.bundle_image, "10001:10001", installer)  # the image's USER
    assert installed.returncode == 0, installed.stderr
    assert (kubelet_pod.volume / "envwrap").exists()

    ran = Pod.run(kubelet_pod.app_image, "1000:1000", app)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"secret={value}\n"
    assert_not_leaked(value, ran.stderr, installed.stdout, installed.stderr,
                      webhook.stderr.text())


def test_install_from_a_pip_installation_fails_clearly(tmp_path: Path,
                                                        base_env: dict[str, str]) -> None:
    result = subprocess.run([*envwrap_command(), "install", str(tmp_path / "out")],
                            env=base_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert "not from a bundle" in result.stderr and "scripts/bundle.sh" in result.stderr
    assert not (tmp_path / "out").exists()


def test_install_copies_a_bundle_that_runs_from_its_new_place(bundle: Path, tmp_path: Path) -> None:
    target = tmp_path / "copied"
    result = subprocess.run([str(bundle / "envwrap"), "install", str(target)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"envwrap installed as {target / 'envwrap'}\n"
    assert not list(target.glob(".*partial"))
    version = subprocess.run([str(target / "envwrap"), "--version"], capture_output=True,
                             text=True, timeout=60)
    assert version.stdout.startswith("envwrap ")
    again = subprocess.run([str(target / "envwrap"), "install", str(target)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 64, again.stderr
