"""The webhook tests' and benchmark's support: admission reviews, pods, a
self-signed certificate, and a running ``envwrap webhook`` with an HTTPS client."""

from __future__ import annotations

import base64
import copy
import datetime
import http.client
import ipaddress
import json
import re
import signal
import ssl
import subprocess
from pathlib import Path

import jsonpatch
import kubernetes_validate
from kubernetes_validate.utils import all_versions, latest_version

from testsupport.helpers import LineCollector, wait_until

IMAGE = "registry.example.com/envwrap-bundle:0.1.0"
#: the oldest and newest Kubernetes schemas kubernetes-validate ships
VERSIONS = sorted({min(all_versions(), key=lambda v: tuple(map(int, v.split(".")))),
                   latest_version()})


def review(pod: dict[str, object], *, operation: str = "CREATE", kind: str = "Pod",
           uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002") -> dict[str, object]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "workflows",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": False,
        },
    }


def pod(*containers: dict[str, object], labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None, **spec: object) -> dict[str, object]:
    metadata: dict[str, object] = {"generateName": "workflows-server-7c9f-",
                                   "namespace": "workflows",
                                   "labels": {"app": "workflows-server", "envwrap/inject": "true"}
                                   if labels is None else labels}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": list(containers), **spec}}


def server_container(**extra: object) -> dict[str, object]:
    return {"name": "server", "image": "registry.example.com/workflows-server:1.0.0",
            "command": ["node"], "args": ["server.js"],
            "env": [{"name": "PORT", "value": "3001"},
                    {"name": "JWT_SECRET", "value": "vault://secret/workflows/jwt#secret"}],
            **extra}


def apply(pod_spec: dict[str, object], answer: dict[str, object]) -> dict[str, object]:
    """The pod as the API server stores it after the webhook's answer."""
    response = answer["response"]
    assert isinstance(response, dict)
    if "patch" not in response:
        return copy.deepcopy(pod_spec)
    assert response["patchType"] == "JSONPatch"
    operations = json.loads(base64.b64decode(response["patch"]))
    result = jsonpatch.JsonPatch(operations).apply(pod_spec)
    assert isinstance(result, dict)
    return result


def validate(doc: dict[str, object], versions: list[str] = VERSIONS) -> None:
    for version in versions:
        kubernetes_validate.validate(doc, version, strict=True)


def self_signed(folder: Path, name: str = "tls") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key; the certificate is its own CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"envwrap-webhook-{name}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Webhook:
    """A running ``envwrap webhook`` process and an HTTPS client for it."""

    def __init__(self, proc: subprocess.Popen[str], cert: Path, key: Path) -> None:
        self.proc = proc
        self.cert = cert
        self.key = key
        assert proc.stderr
        self.stderr = LineCollector(proc.stderr)
        wait_until(lambda: "serving https://" in self.stderr.text() or proc.poll() is not None,
                   timeout=30)
        match = re.search(r"serving https://127\.0\.0\.1:(\d+)/mutate", self.stderr.text())
        assert match, self.stderr.text()
        self.port = int(match.group(1))

    def client_context(self, cafile: Path | None = None) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(cafile or self.cert))

    def connection(self, cafile: Path | None = None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10,
                                           context=self.client_context(cafile))

    def post(self, body: bytes | dict[str, object], path: str = "/mutate") -> tuple[int, bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn = self.connection()
        try:
            conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def mutate(self, review: dict[str, object]) -> dict[str, object]:
        status, body = self.post(review)
        assert status == 200, body
        answer = json.loads(body)
        assert isinstance(answer, dict)
        return answer

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)
