"""``envwrap webhook`` as a real process, spoken to over HTTPS as the API server does."""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path

import pytest

from testsupport.webhook import Webhook, apply, pod, review, self_signed, server_container, validate


def test_opted_in_pod_comes_back_patched_and_valid(webhook: Webhook) -> None:
    spec = pod(server_container(), annotations={
        "envwrap/options": "--watch --on-change handoff --listen :3001 --ready notify"})
    answer = webhook.mutate(review(spec))
    response = answer["response"]
    assert response["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"  # type: ignore[index]
    assert response["allowed"] is True  # type: ignore[index]
    result = apply(spec, answer)
    validate(result)
    assert result["spec"]["containers"][0]["command"][0] == "/envwrap/envwrap"  # type: ignore[index]
    assert "injected envwrap" in webhook.stderr.text()


def test_update_and_unlabelled_pods_get_no_patch(webhook: Webhook) -> None:
    for request in (review(pod(server_container()), operation="UPDATE"),
                    review(pod(server_container(), labels={"app": "x"}))):
        assert "patch" not in webhook.mutate(request)["response"]  # type: ignore[operator]


def test_healthz_and_unknown_paths(webhook: Webhook) -> None:
    conn = webhook.connection()
    conn.request("GET", "/healthz")
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"ok\n")
    conn.request("GET", "/nowhere")  # the same kept-alive connection
    response = conn.getresponse()
    assert response.status == 404
    response.read()
    conn.request("GET", "/mutate")
    assert conn.getresponse().status == 405
    conn.close()


@pytest.mark.parametrize("body", [b"garbage", b"{}", b'{"apiVersion": "v1", "kind": "Pod"}'])
def test_garbage_is_400_and_the_server_goes_on(webhook: Webhook, body: bytes) -> None:
    status, _ = webhook.post(body)
    assert status == 400
    assert webhook.mutate(review(pod(server_container())))["response"]["allowed"] is True  # type: ignore[index]


def test_bad_clients_cost_no_traceback_and_the_server_goes_on(webhook: Webhook) -> None:
    # plain HTTP on the TLS port, a half handshake, raw non-HTTP after the handshake,
    # and a body cut short
    with socket.create_connection(("127.0.0.1", webhook.port)) as plain:
        plain.sendall(b"POST /mutate HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
        plain.settimeout(10)
        try:  # the server closes the connection (after a TLS alert, or with a reset)
            while plain.recv(4096):
                pass
        except ConnectionResetError:
            pass
    with socket.create_connection(("127.0.0.1", webhook.port)) as half:
        half.sendall(b"\x16\x03\x01\x00")
    context = webhook.client_context()
    with context.wrap_socket(socket.create_connection(("127.0.0.1", webhook.port)),
                             server_hostname="127.0.0.1") as tls:
        tls.sendall(b"\x00\x01 nonsense\r\n\r\n")
        tls.settimeout(10)
        assert tls.recv(100).startswith(b"HTTP/1.1 400")
    with context.wrap_socket(socket.create_connection(("127.0.0.1", webhook.port)),
                             server_hostname="127.0.0.1") as cut:
        cut.sendall(b"POST /mutate HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{")
    assert webhook.mutate(review(pod(server_container())))["response"]["allowed"] is True  # type: ignore[index]
    assert webhook.proc.poll() is None


@pytest.mark.slow
def test_a_slow_client_is_cut_off_at_the_deadline_and_others_are_served(webhook: Webhook) -> None:
    context = webhook.client_context()
    slow = context.wrap_socket(socket.create_connection(("127.0.0.1", webhook.port)),
                               server_hostname="127.0.0.1")
    started = time.monotonic()
    slow.settimeout(30)
    slow.sendall(b"POST /mutate HTTP/1.1\r\n")
    try:
        while True:  # one header byte every half second: never a complete request
            status = webhook.mutate(review(pod(server_container())))["response"]
            assert status["allowed"] is True  # type: ignore[index]
            slow.sendall(b"X")
            time.sleep(0.5)
    except OSError:
        pass
    elapsed = time.monotonic() - started
    assert 9 <= elapsed <= 15, elapsed  # the 10 s request deadline, not one timeout per byte
    slow.close()


def test_renewed_certificate_is_served_without_a_restart(webhook: Webhook, tmp_path: Path) -> None:
    assert webhook.mutate(review(pod(server_container())))
    new_cert, new_key = self_signed(tmp_path, "renewed")
    # as the kubelet updates a Secret volume: the new files appear at once
    os.replace(new_key, webhook.key)
    os.replace(new_cert, webhook.cert)
    # a client that trusts only the renewed certificate gets through...
    conn = webhook.connection(cafile=webhook.cert)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()
    assert "certificate reloaded" in webhook.stderr.text()


def test_renewed_certificate_replaces_the_old_one(webhook: Webhook, tmp_path: Path) -> None:
    old = tmp_path / "old.crt"
    old.write_bytes(webhook.cert.read_bytes())
    new_cert, new_key = self_signed(tmp_path, "renewed")
    os.replace(new_key, webhook.key)
    os.replace(new_cert, webhook.cert)
    conn = webhook.connection(cafile=old)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/healthz")
    conn.close()


def test_half_written_certificate_keeps_the_previous_one_serving(
        webhook: Webhook, tmp_path: Path) -> None:
    trusted = tmp_path / "trusted.crt"
    trusted.write_bytes(webhook.cert.read_bytes())
    other_cert, other_key = self_signed(tmp_path, "other")
    os.replace(other_cert, webhook.cert)  # a certificate without its key yet
    conn = webhook.connection(cafile=trusted)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()
    assert "do not load" in webhook.stderr.text()
    os.replace(other_key, webhook.key)  # the key arrives: the new pair is taken
    conn = webhook.connection(cafile=webhook.cert)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()


def test_missing_options_and_bad_certificate_are_usage_and_config_errors(
        tmp_path: Path, base_env: dict[str, str]) -> None:
    import subprocess

    from testsupport import envwrap_command

    missing = subprocess.run([*envwrap_command(), "webhook", "--listen", ":0"],
                             env=base_env, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 64
    assert "--tls-cert" in missing.stderr and "--image" in missing.stderr
    (tmp_path / "bad.crt").write_text("not a certificate")
    bad = subprocess.run([*envwrap_command(), "webhook", "--listen", "127.0.0.1:0",
                          "--tls-cert", str(tmp_path / "bad.crt"), "--tls-key",
                          str(tmp_path / "bad.crt"), "--image", "x"],
                         env=base_env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 78, bad.stderr
    assert "Traceback" not in bad.stderr


def test_idle_kept_alive_connections_cannot_starve_a_new_client(webhook: Webhook) -> None:
    """More idle connections than workers (64): the webhook closes idle ones for a newcomer."""
    idle = []
    try:
        for _ in range(70):
            conn = webhook.connection()
            conn.request("GET", "/healthz")
            assert conn.getresponse().read() == b"ok\n"
            idle.append(conn)
        started = time.monotonic()
        assert webhook.mutate(review(pod(server_container())))["response"]["allowed"] is True  # type: ignore[index]
        assert time.monotonic() - started < 5  # not the 15 s idle timeout
    finally:
        for conn in idle:
            conn.close()


def test_sigterm_stops_promptly_despite_an_idle_kept_alive_connection(webhook: Webhook) -> None:
    conn = webhook.connection()
    conn.request("GET", "/healthz")
    assert conn.getresponse().read() == b"ok\n"
    started = time.monotonic()
    assert webhook.stop() == 0
    assert time.monotonic() - started < 5  # not the 15 s idle timeout
    conn.close()
