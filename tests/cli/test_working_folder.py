"""envwrap's own working folder is ``/``; the program's is the start folder (docs/containers.md).

Also: a ``.env`` file, or a secret's folder, that appears after start is picked up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport import envwrap_command
from testsupport.helpers import LineCollector, assert_not_leaked, canary, stop_process, wait_until
from testsupport.supervise_support import ECHO, Envwrap


def cwd_of(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/cwd")


@pytest.mark.parametrize("mode", ["--init", "--watch"])
def test_envwrap_leaves_its_start_folder_and_the_program_starts_in_it(
    mode: str, workdir: Path, base_env: dict[str, str]
) -> None:
    ew = Envwrap([mode, "--", *ECHO], base_env)
    try:
        child = ew.ready()
        assert cwd_of(ew.pid) == "/"
        assert cwd_of(child) == str(workdir)
    finally:
        ew.close()


def test_negative_control_in_exec_mode_the_process_keeps_the_folder(
    workdir: Path, base_env: dict[str, str]
) -> None:
    # exec mode: envwrap becomes the program, which starts (and stays) here
    ew = Envwrap(["--", *ECHO], base_env)
    try:
        assert ew.ready() == ew.pid
        assert cwd_of(ew.pid) == str(workdir)
    finally:
        ew.close()


@contextlib.contextmanager
def tmpfs(where: Path) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(where)], capture_output=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def umount(where: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["umount", str(where)], capture_output=True, check=False)


# the program leaves the folder itself, so that only envwrap could keep it busy
LEAVING = ["sh", "-c", 'cd / && exec "$@"', "sh", *ECHO]


@pytest.mark.skipif(shutil.which("mount") is None, reason="no mount(8)")
@pytest.mark.parametrize("busy", [False, True], ids=["supervise", "negative-control-exec"])
def test_the_start_folder_can_be_unmounted_while_envwrap_runs(
    busy: bool, tmp_path: Path, base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with tmpfs(tmp_path / "volume") as volume:
        monkeypatch.chdir(volume)
        # exec mode is the control: the process started in the folder keeps it
        ew = Envwrap([*([] if busy else ["--init"]), "--", *(ECHO if busy else LEAVING)],
                     base_env)
        try:
            ew.ready()
            monkeypatch.chdir(tmp_path)  # pytest itself must not pin it either
            result = umount(volume)
            if busy:
                assert result.returncode != 0 and b"busy" in result.stderr
            else:
                assert result.returncode == 0, result.stderr
        finally:
            ew.close()


# --- relative paths, and files that appear later ------------------------------------------

CHILD = ["sh", "-c", 'echo "started $$ ${PORT:-none} ${KEYFP:-none}"; exec sleep 300']


class Watching:
    def __init__(
        self, args: list[str], env: dict[str, str], cwd: Path, child: list[str] = CHILD
    ) -> None:
        self.proc = subprocess.Popen(
            [*envwrap_command(), "--watch", "--interval", "30s", "--log-level", "info", *args,
             "--", *child],
            env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out = LineCollector(self.proc.stdout)
        self.err = LineCollector(self.proc.stderr)

    def starts(self) -> list[list[str]]:
        return [line.split()[1:] for line in self.out.lines if line.startswith("started")]

    def wait_start(self, *fields: str, timeout: float = 15) -> None:
        def found() -> bool:
            assert self.proc.poll() is None, "".join(self.err.lines)
            return any(start[1:] == list(fields) for start in self.starts())

        try:
            wait_until(found, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"no start with {fields}: {self.starts()}\n"
                                 + "".join(self.err.lines)) from None

    def close(self) -> str:
        stop_process(self.proc, timeout=15)
        return self.err.join()


def test_relative_paths_keep_working_after_envwrap_left_the_folder(
    workdir: Path, base_env: dict[str, str]
) -> None:
    (workdir / "app.env").write_text("PORT=3001\n")
    ew = Watching(["--env-file", "app.env", "--render", "out.json", "--audit-log",
                   "audit.jsonl"], base_env, workdir)
    try:
        ew.wait_start("3001", "none")
        (workdir / "app.env").write_text("PORT=3002\n")
        ew.wait_start("3002", "none")
        assert json.loads((workdir / "out.json").read_text())["PORT"] == "3002"
        assert (workdir / "audit.jsonl").exists()
        assert not Path("/out.json").exists() and not Path("/audit.jsonl").exists()
    finally:
        ew.close()


@pytest.mark.parametrize("disabled", [False, True], ids=["watched", "negative-control"])
def test_a_dotenv_created_after_start_is_picked_up(
    disabled: bool, workdir: Path, base_env: dict[str, str]
) -> None:
    ew = Watching(["--no-env-file"] if disabled else [], base_env, workdir)
    try:
        ew.wait_start("none", "none")
        (workdir / ".env").write_text("PORT=4000\n")
        if disabled:
            time.sleep(1.5)  # a "nothing happens" window: several --wait periods
            assert [s[1] for s in ew.starts()] == ["none"]
        else:
            ew.wait_start("4000", "none")
            assert len(ew.starts()) == 2
    finally:
        ew.close()


def fp(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def test_a_secret_folder_removed_and_created_again_is_followed(
    workdir: Path, base_env: dict[str, str]
) -> None:
    # deeper than the .env file's folder, which is watched anyway
    volume = workdir / "mnt" / "volume"
    volume.mkdir(parents=True)
    old, new = canary("old"), canary("new")
    (volume / "key").write_text(old)
    # the child prints a fingerprint of the secret, never the secret
    (workdir / ".env").write_text(f"KEY=ref+file://{volume}/key\n")
    child = ["sh", "-c", 'echo "started $$ none $(printf %s "$KEY" | sha256sum | cut -c1-12)"; '
             "exec sleep 300"]
    ew = Watching([], base_env, workdir, child)
    try:
        ew.wait_start("none", fp(old))
        shutil.rmtree(volume)
        time.sleep(0.5)  # let the watcher see the folder go (it keeps the old value)
        volume.mkdir()
        (volume / "key").write_text(new)
        ew.wait_start("none", fp(new), timeout=20)
    finally:
        err = ew.close()
    assert_not_leaked(old, err)
    assert_not_leaked(new, err)


def test_every_path_option_is_made_absolute(workdir: Path) -> None:
    from envwrap.config import OPTIONS, make_paths_absolute, parse_args

    paths = [o for o in OPTIONS if o.metavar in ("PATH", "FILE")]
    assert {o.flag for o in paths} >= {"--env-file", "--render", "--audit-log",
                                       "--require-example", "--target-pid-file"}
    for command in ("run", "sidecar", "check"):
        argv = [command] if command != "run" else []
        for option in paths:
            if command in option.commands:
                argv += [option.flag, "rel/" + option.dest]
        argv += ["--render", "out.env"] if command == "sidecar" else []
        argv += ["--", "true"] if command == "run" else []
        settings = parse_args(argv, {})
        make_paths_absolute(settings)
        assert settings.start_folder == str(workdir)
        for option in paths:
            if command not in option.commands:
                continue
            value = getattr(settings, option.dest)
            for item in value if isinstance(value, list) else [value]:
                assert os.path.isabs(item), (option.flag, item)
    settings = parse_args(["--audit-log", "-", "--", "true"], {})
    make_paths_absolute(settings)
    assert settings.audit_log == "-"  # stderr, not a file named "-"


def test_a_restart_after_the_start_folder_was_removed_starts_in_root(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    # rmdir succeeds on Linux even while a process sits in the folder; what
    # must not happen is a restart that fails because it cannot chdir there
    start = tmp_path / "release-1"
    start.mkdir()
    secret = tmp_path / "key"
    old, new = canary("old"), canary("new")
    secret.write_text(old)
    child = ["sh", "-c", 'echo "started $$ $(pwd) $(printf %s "$KEY" | sha256sum | cut -c1-12)";'
             " exec sleep 300"]
    ew = Watching(["--no-env-file"], {**base_env, "KEY": f"ref+file://{secret}"}, start, child)
    try:
        ew.wait_start(str(start), fp(old))
        start.rmdir()
        secret.write_text(new)
        ew.wait_start("/", fp(new))
    finally:
        err = ew.close()
    assert "the folder envwrap was started in is gone" in err
    assert_not_leaked(old, err)
    assert_not_leaked(new, err)
