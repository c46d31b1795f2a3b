"""--mask: the streaming Masker, the fd relay, and a real child through MaskedOutput."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envwrap.mask import MaskedOutput, Masker, relay
from envwrap.secret import MIN_REDACT_LENGTH, REDACTED
from testsupport.helpers import canary, wait_until

STAR = REDACTED.encode()


def reference(data: bytes, values: Iterable[str]) -> bytes:
    """One-shot masking, written the obvious way: mark every occurrence, merge overlaps."""
    encoded = {v.encode("utf-8", "surrogateescape") for v in values if len(v) >= MIN_REDACT_LENGTH}
    spans = []
    for value in encoded:
        i = data.find(value)
        while i != -1:
            spans.append((i, i + len(value)))
            i = data.find(value, i + 1)
    runs: list[list[int]] = []
    for start, end in sorted(spans):
        if runs and start < runs[-1][1]:  # overlaps the previous run
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([start, end])
    out, pos = [], 0
    for start, end in runs:
        out += [data[pos:start], STAR]
        pos = end
    out.append(data[pos:])
    return b"".join(out)


def mask_in_chunks(values: Iterable[str], chunks: Iterable[bytes]) -> bytes:
    masker = Masker(values)
    out = [masker.feed(chunk) for chunk in chunks]
    out.append(masker.flush())
    return b"".join(out)


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# --- Masker, by example -------------------------------------------------------------


def test_masks_every_occurrence() -> None:
    assert mask_in_chunks(["hunter2!"], [b"pw=hunter2! again hunter2!\n"]) == (
        b"pw=***** again *****\n"
    )


def test_values_shorter_than_four_characters_are_left_alone() -> None:
    # "dev" would turn every "device" into "*****ice"; a 4-character value is masked.
    assert MIN_REDACT_LENGTH == 4
    assert mask_in_chunks(["dev", "prod"], [b"device dev prod\n"]) == b"device dev *****\n"


def test_the_rule_counts_characters_not_bytes() -> None:
    # "\u00e9\u00e9\u00e9" is 3 characters (6 bytes): left alone, as secret.redact does
    assert mask_in_chunks(["\u00e9\u00e9\u00e9"], ["x\u00e9\u00e9\u00e9".encode()]) == (
        "x\u00e9\u00e9\u00e9".encode()
    )


def test_longest_value_is_replaced_whole() -> None:
    # "pass" is inside "password1": one marker, no "*****word1"
    assert mask_in_chunks(["pass", "password1"], [b"[password1]"]) == b"[*****]"


def test_overlapping_values_are_one_run() -> None:
    # Left-to-right replacement would give "*****efgh" and print the tail of the
    # second value; both are hidden.
    assert mask_in_chunks(["abcd", "cdefgh"], [b"<abcdefgh>"]) == b"<*****>"


def test_touching_values_give_one_marker_each() -> None:
    assert mask_in_chunks(["AAAA", "BBBB"], [b"AAAABBBB"]) == b"**********"


def test_duplicate_and_empty_inputs() -> None:
    assert mask_in_chunks(["same", "same"], [b"same"]) == STAR
    assert mask_in_chunks([], [b"anything", b""]) == b"anything"
    assert mask_in_chunks(["abcd"], [b""]) == b""


def test_multibyte_and_undecodable_values() -> None:
    euro = "\u20ac\u20ac\u20ac\u20ac"  # 12 bytes in UTF-8
    raw = "ab\udcffcd"  # how os.environ holds the bytes b"ab\xffcd"
    data = b"1 " + euro.encode() + b" 2 ab\xffcd 3"
    for cut in range(len(data) + 1):
        assert mask_in_chunks([euro, raw], [data[:cut], data[cut:]]) == b"1 ***** 2 ***** 3"
    # a lone surrogate cannot be in an environment: ignored, not a crash
    assert mask_in_chunks(["\ud800abcd"], [b"x"]) == b"x"


@pytest.mark.parametrize(
    ("values", "data"),
    [
        (["secret-value"], b"a secret-value b"),
        (["abab", "ababab"], b"xababababx"),  # self-overlapping, prefix of another
        (["aaaa"], b"aaaaaaaaaa"),
        (["abcd", "cdefgh", "ghij"], b"..abcdefghij.."),
        (["token-1234", "token-12345678"], b"token-1234 token-12345678 token-123"),
    ],
)
def test_a_value_split_at_every_position(values: list[str], data: bytes) -> None:
    expected = reference(data, values)
    assert mask_in_chunks(values, [data]) == expected
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            assert mask_in_chunks(values, [data[:i], data[i:j], data[j:]]) == expected
    # byte at a time
    assert mask_in_chunks(values, [data[i : i + 1] for i in range(len(data))]) == expected


def test_holds_back_only_a_value_prefix() -> None:
    masker = Masker(["sk-live-0123456789"])
    assert masker.feed(b"line one\n") == b"line one\n"  # nothing held: not a prefix
    assert masker.pending == 0
    assert masker.feed(b"key=sk-li") == b"key="
    assert masker.pending == len(b"sk-li") < masker.longest
    assert masker.feed(b"ve-0123456789 ok\n") == b"***** ok\n"
    assert masker.feed(b"sk-") == b""
    assert masker.feed(b"lively\n") == b"sk-lively\n"  # was not the value after all
    assert masker.feed(b"end sk") == b"end "
    assert masker.flush() == b"sk"  # EOF: a prefix alone is not the value


def test_a_match_running_into_the_held_tail_is_not_doubled() -> None:
    # "abcdef" is complete in the first chunk, but "defghijk" may start inside it
    # and is only known in the next chunk: one marker, nothing of either printed.
    values = ["abcdef", "defghijk"]
    masker = Masker(values)
    first = masker.feed(b"<abcdefgh")
    second = masker.feed(b"ijk>")
    assert first + second + masker.flush() == b"<*****>"


def test_update_adds_values_and_keeps_old_ones() -> None:
    masker = Masker(["old-secret"])
    assert masker.feed(b"old-secret new-secret\n") == b"***** new-secret\n"
    masker.update(["new-secret"])
    assert masker.feed(b"old-secret new-secret\n") == b"***** *****\n"


def test_update_while_a_prefix_is_held() -> None:
    masker = Masker(["abcdefgh"])
    assert masker.feed(b"x abc") == b"x "
    masker.update(["abc-longer-value"])
    assert masker.feed(b"-longer-value y") + masker.flush() == b"***** y"


# --- Masker, by property -------------------------------------------------------------

# A small alphabet makes overlaps, repeats and shared prefixes common; multibyte
# characters and an undecodable byte (surrogateescape) exercise byte-level splits.
ALPHABET = "ab\u00e9\u20ac\udcff"
secret_values = st.lists(st.text(ALPHABET, min_size=1, max_size=9), min_size=0, max_size=5)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[str], bytes, list[int]]:
    values = draw(secret_values)
    filler = st.text(ALPHABET + "x\n*", max_size=6)
    parts = draw(
        st.lists(st.one_of(filler, st.sampled_from(values)) if values else filler, max_size=12)
    )
    data = "".join(parts).encode("utf-8", "surrogateescape")
    cuts = draw(st.lists(st.integers(0, 10_000), max_size=8))
    return values, data, cuts


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_any_chunking_gives_the_one_shot_result(case: tuple[list[str], bytes, list[int]]) -> None:
    values, data, cuts = case
    expected = reference(data, values)
    assert mask_in_chunks(values, split_at(data, cuts)) == expected
    assert mask_in_chunks(values, [data]) == expected


@settings(max_examples=300, deadline=None)
@given(streams())
def test_no_value_survives(case: tuple[list[str], bytes, list[int]]) -> None:
    values, data, cuts = case
    out = mask_in_chunks(values, split_at(data, cuts))
    for value in values:
        if len(value) >= MIN_REDACT_LENGTH:
            assert value.encode("utf-8", "surrogateescape") not in out


@settings(max_examples=300, deadline=None)
@given(streams())
def test_held_back_tail_is_shorter_than_the_longest_value(
    case: tuple[list[str], bytes, list[int]],
) -> None:
    values, data, cuts = case
    masker = Masker(values)
    for chunk in split_at(data, cuts):
        masker.feed(chunk)
        assert masker.pending <= max(0, masker.longest - 1)


# --- relay over real pipes ----------------------------------------------------------


class Pipe:
    """A pipe whose read end is drained into a buffer by a thread."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.data = b""
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while chunk := os.read(self.read_fd, 65536):
            self.data += chunk
        os.close(self.read_fd)

    def close_write(self) -> None:
        os.close(self.write_fd)

    def wait(self) -> bytes:
        self._thread.join(10)
        return self.data


@pytest.fixture
def relayed() -> Iterator[tuple[int, Pipe, Masker, threading.Thread]]:
    """A relay thread from a source pipe (we write into the fd given) to a Pipe."""
    src_read, src_write = os.pipe()
    dst = Pipe()
    masker = Masker(["sk-live-0123456789"])
    thread = threading.Thread(target=relay, args=(src_read, dst.write_fd, masker), daemon=True)
    thread.start()
    yield src_write, dst, masker, thread
    thread.join(5)
    os.close(src_read)


def test_relay_masks_and_passes_everything(
    relayed: tuple[int, Pipe, Masker, threading.Thread],
) -> None:
    src, dst, _, thread = relayed
    payload = (b"x" * 1000 + b"sk-live-0123456789\n") * 500  # several reads' worth
    os.write(src, payload)
    os.close(src)
    thread.join(5)
    dst.close_write()
    assert dst.wait() == payload.replace(b"sk-live-0123456789", STAR)


def test_relay_value_split_by_a_pause(
    relayed: tuple[int, Pipe, Masker, threading.Thread],
) -> None:
    src, dst, _, thread = relayed
    os.write(src, b"starting\n")
    # Not a value prefix: arrives at once, without waiting for more input or EOF.
    wait_until(lambda: dst.data == b"starting\n", timeout=0.5, interval=0.005)
    os.write(src, b"key=sk-live-01")
    wait_until(lambda: dst.data == b"starting\nkey=", timeout=0.5, interval=0.005)
    time.sleep(0.3)  # the child pauses mid-value; the held prefix must not leak
    assert dst.data == b"starting\nkey="
    os.write(src, b"23456789 ready\n")
    wait_until(lambda: dst.data == b"starting\nkey=***** ready\n", timeout=0.5, interval=0.005)
    os.close(src)
    thread.join(5)
    dst.close_write()
    assert dst.wait() == b"starting\nkey=***** ready\n"


def test_relay_flushes_a_held_prefix_at_eof(
    relayed: tuple[int, Pipe, Masker, threading.Thread],
) -> None:
    src, dst, _, thread = relayed
    os.write(src, b"partial sk-live")
    os.close(src)
    thread.join(5)
    assert not thread.is_alive()
    dst.close_write()
    assert dst.wait() == b"partial sk-live"


def test_relay_stops_cleanly_when_the_destination_is_gone() -> None:
    src_read, src_write = os.pipe()
    dst_read, dst_write = os.pipe()
    os.close(dst_read)  # nobody reads envwrap's output any more
    thread = threading.Thread(target=relay, args=(src_read, dst_write, Masker(["abcd"])))
    thread.start()
    os.write(src_write, b"hello\n")
    thread.join(5)
    assert not thread.is_alive()  # returned on EPIPE, no exception, no hang
    for fd in (src_read, src_write, dst_write):
        os.close(fd)


# --- MaskedOutput with a real child ---------------------------------------------------

CHILD = """
import os, sys, time
value = os.environ["APP_TOKEN"]
print("stdout has", value, flush=True)
print("stderr has", value, "and", os.environ["SHORT"], file=sys.stderr, flush=True)
sys.stdout.write("split " + value[:5]); sys.stdout.flush()
time.sleep(0.1)
sys.stdout.write(value[5:] + " end\\n")
"""


def _files(tmp_path: Path) -> tuple[int, int, Path, Path]:
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    return os.open(out_path, flags), os.open(err_path, flags), out_path, err_path


def test_child_output_is_masked_on_both_streams(tmp_path: Path) -> None:
    token = canary("token")
    out_fd, err_fd, out_path, err_path = _files(tmp_path)
    masked = MaskedOutput([token, "abc"], stdout_fd=out_fd, stderr_fd=err_fd)
    env = {**os.environ, "APP_TOKEN": token, "SHORT": "abc"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdout=masked.child_stdout_fd,
        stderr=masked.child_stderr_fd,
        env=env,
    )
    masked.close_child_ends()
    assert proc.wait(10) == 0
    assert masked.join(5)
    os.close(out_fd)
    os.close(err_fd)
    assert out_path.read_text() == "stdout has *****\nsplit ***** end\n"
    assert err_path.read_text() == "stderr has ***** and abc\n"


LIST_PIPES = """
import os
for fd in sorted(int(f) for f in os.listdir("/proc/self/fd")):
    try:
        print(fd, os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        pass
"""


def test_child_holds_the_pipes_only_as_1_and_2(tmp_path: Path) -> None:
    # Neither the read ends nor extra copies of the write ends reach the child,
    # even with close_fds=False: the parent's ends are O_CLOEXEC.
    out_fd, err_fd, out_path, _ = _files(tmp_path)
    masked = MaskedOutput([], stdout_fd=out_fd, stderr_fd=err_fd)
    pipes = {
        f"pipe:[{os.fstat(masked.child_stdout_fd).st_ino}]",
        f"pipe:[{os.fstat(masked.child_stderr_fd).st_ino}]",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", LIST_PIPES],
        stdin=subprocess.DEVNULL,
        stdout=masked.child_stdout_fd,
        stderr=masked.child_stderr_fd,
        close_fds=False,
    )
    masked.close_child_ends()
    assert proc.wait(10) == 0
    assert masked.join(5)
    os.close(out_fd)
    os.close(err_fd)
    lines = [line.split(" ", 1) for line in out_path.read_text().splitlines()]
    assert sorted(int(fd) for fd, target in lines if target in pipes) == [1, 2]


def test_update_reaches_both_streams(tmp_path: Path) -> None:
    out_fd, err_fd, out_path, err_path = _files(tmp_path)
    masked = MaskedOutput(["first-value"], stdout_fd=out_fd, stderr_fd=err_fd)
    masked.update(["second-value"])
    os.write(masked.child_stdout_fd, b"first-value second-value\n")
    os.write(masked.child_stderr_fd, b"second-value first-value\n")
    masked.close_child_ends()
    masked.close_child_ends()  # idempotent
    assert masked.join(5)
    os.close(out_fd)
    os.close(err_fd)
    assert out_path.read_bytes() == b"***** *****\n"
    assert err_path.read_bytes() == b"***** *****\n"


def test_a_child_whose_reader_went_away_gets_sigpipe() -> None:
    # envwrap --mask -- yes | head -1: without envwrap, `yes` dies of SIGPIPE at
    # once; through the relay it must too, not run forever.
    dst_read, dst_write = os.pipe()
    masked = MaskedOutput(["abcd"], stdout_fd=dst_write, stderr_fd=dst_write)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys\nsignal.signal(signal.SIGPIPE, signal.SIG_DFL)\n"
            "while True: sys.stdout.write('y' * 4096 + '\\n')",
        ],
        stdout=masked.child_stdout_fd,
        stderr=masked.child_stderr_fd,
    )
    masked.close_child_ends()
    assert os.read(dst_read, 10)
    os.close(dst_read)
    try:
        assert proc.wait(10) == -13  # SIGPIPE
    finally:
        proc.kill()
    # stdout's relay stopped; stderr's ends once the dead child's end is closed
    assert masked.join(5)
    os.close(dst_write)
