"""What the webhook does to a pod, decided without a server (fast)."""

from __future__ import annotations

import json

import pytest

from envwrap.modes.webhook_patch import (
    ANNOTATION_STATUS,
    INSTALLER_NAME,
    VOLUME_NAME,
    InvalidReview,
    review_response,
)
from testsupport.webhook import IMAGE, apply, pod, review, server_container, validate


def answer(request: dict[str, object]) -> dict[str, object]:
    result, _ = review_response(json.dumps(request).encode(), IMAGE)
    return result


def mutated(spec: dict[str, object]) -> dict[str, object]:
    response = answer(review(spec))
    assert response["response"]["allowed"] is True  # type: ignore[index]
    return apply(spec, response)


def test_opted_in_pod_gets_volume_installer_and_wrapped_command() -> None:
    spec = pod(server_container(), annotations={
        "envwrap/options": "--watch --on-change handoff --listen :3001 --ready notify"})
    result = mutated(spec)
    validate(result)
    pod_spec = result["spec"]
    (volume,) = pod_spec["volumes"]  # type: ignore[index]
    assert volume == {"name": VOLUME_NAME, "emptyDir": {"medium": "Memory", "sizeLimit": "128Mi"}}
    (installer,) = pod_spec["initContainers"]  # type: ignore[index]
    assert installer["name"] == INSTALLER_NAME and installer["image"] == IMAGE
    assert installer["command"][1:] == ["install", "/envwrap"]
    (server,) = pod_spec["containers"]  # type: ignore[index]
    assert server["command"] == ["/envwrap/envwrap", "--watch", "--on-change", "handoff",
                                 "--listen", ":3001", "--ready", "notify", "--", "node", "server.js"]
    assert "args" not in server
    assert server["volumeMounts"] == [{"name": VOLUME_NAME, "mountPath": "/envwrap", "readOnly": True}]
    assert result["metadata"]["annotations"][ANNOTATION_STATUS] == "injected"  # type: ignore[index]
    assert server["env"] == spec["spec"]["containers"][0]["env"]  # type: ignore[index]  # no secret read


def test_existing_volumes_mounts_init_containers_and_annotations_are_kept() -> None:
    container = server_container(volumeMounts=[{"name": "data", "mountPath": "/data"}])
    spec = pod(container, annotations={"team": "workflows"},
               volumes=[{"name": "data", "emptyDir": {}}],
               initContainers=[{"name": "migrate", "image": "m:1", "command": ["migrate"]}])
    result = mutated(spec)
    validate(result)
    assert [v["name"] for v in result["spec"]["volumes"]] == ["data", VOLUME_NAME]  # type: ignore[index]
    assert [c["name"] for c in result["spec"]["initContainers"]] == [INSTALLER_NAME, "migrate"]  # type: ignore[index]
    assert [m["name"] for m in result["spec"]["containers"][0]["volumeMounts"]] == ["data", VOLUME_NAME]  # type: ignore[index]
    assert result["metadata"]["annotations"] == {"team": "workflows", ANNOTATION_STATUS: "injected"}  # type: ignore[index]


def test_only_containers_with_a_reference_are_picked() -> None:
    plain = {"name": "proxy", "image": "envoy:1", "command": ["envoy"],
             "env": [{"name": "URL", "value": "https://example.com"}]}
    inline = {"name": "worker", "image": "w:1", "command": ["node", "worker.js"],
              "env": [{"name": "DATABASE_URL",
                       "value": "postgresql://${vault://secret/db#user}@db/x"}]}
    result = mutated(pod(server_container(), plain, inline))
    commands = {c["name"]: c["command"] for c in result["spec"]["containers"]}  # type: ignore[index]
    assert commands["proxy"] == ["envoy"]
    assert commands["worker"][:2] == ["/envwrap/envwrap", "--"]
    assert commands["server"][0] == "/envwrap/envwrap"


def test_annotation_names_the_containers_and_unknown_names_are_warned_about() -> None:
    plain = {"name": "proxy", "image": "envoy:1", "command": ["envoy"]}
    spec = pod(server_container(), plain, annotations={"envwrap/containers": "proxy, ghost"})
    response = answer(review(spec))
    result = apply(spec, response)
    commands = {c["name"]: c["command"] for c in result["spec"]["containers"]}  # type: ignore[index]
    assert commands == {"server": ["node"], "proxy": ["/envwrap/envwrap", "--", "envoy"]}
    assert any("'ghost'" in w for w in response["response"]["warnings"])  # type: ignore[index]


def test_container_without_command_is_left_alone_with_a_warning() -> None:
    no_command = server_container()
    del no_command["command"], no_command["args"]
    response = answer(review(pod(no_command)))
    body = response["response"]
    assert body["allowed"] is True and "patch" not in body  # type: ignore[index]
    (warning,) = body["warnings"]  # type: ignore[index]
    assert "'server'" in warning and "command" in warning


def test_one_container_without_command_does_not_stop_the_others() -> None:
    no_command = server_container(name="sidekick")
    del no_command["command"]
    spec = pod(server_container(), no_command)
    response = answer(review(spec))
    result = apply(spec, response)
    validate(result)
    names = {c["name"]: c for c in result["spec"]["containers"]}  # type: ignore[index]
    assert names["server"]["command"][0] == "/envwrap/envwrap"
    assert names["sidekick"] == no_command
    assert any("'sidekick'" in w for w in response["response"]["warnings"])  # type: ignore[index]


@pytest.mark.parametrize("request_", [
    review(pod(server_container(), labels={"app": "x"})),
    review(pod(server_container(), labels={"envwrap/inject": "false"})),
    review(pod(server_container()), operation="UPDATE"),
    review(pod(server_container()), operation="DELETE"),
    review({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}, kind="ConfigMap"),
    review(pod(server_container(), annotations={ANNOTATION_STATUS: "injected"})),
], ids=["no-label", "label-false", "update", "delete", "configmap", "already-injected"])
def test_not_ours_is_allowed_without_a_patch(request_: dict[str, object]) -> None:
    response = answer(request_)
    assert response == {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                        "response": {"uid": request_["request"]["uid"], "allowed": True}}  # type: ignore[index]


def test_mutating_twice_changes_nothing_the_second_time() -> None:
    once = mutated(pod(server_container()))
    assert "patch" not in answer(review(once))["response"]  # type: ignore[operator]
    assert mutated(once) == once


def test_options_that_cannot_be_split_leave_the_pod_alone_with_a_warning() -> None:
    response = answer(review(pod(server_container(), annotations={"envwrap/options": "--watch '"})))
    assert response["response"]["allowed"] is True  # type: ignore[index]
    assert "patch" not in response["response"]  # type: ignore[operator]
    assert "envwrap/options" in response["response"]["warnings"][0]  # type: ignore[index]


def test_wrong_options_are_injected_and_warned_about_so_the_pod_fails_closed() -> None:
    spec = pod(server_container(), annotations={"envwrap/options": "--on-change handoff"})
    response = answer(review(spec))
    assert "--ready" in response["response"]["warnings"][0]  # type: ignore[index]
    result = apply(spec, response)
    assert result["spec"]["containers"][0]["command"][:3] == ["/envwrap/envwrap", "--on-change", "handoff"]  # type: ignore[index]


def test_opted_in_pod_with_nothing_to_inject_is_warned_about() -> None:
    plain = {"name": "proxy", "image": "envoy:1", "command": ["envoy"]}
    response = answer(review(pod(plain)))
    assert "patch" not in response["response"]  # type: ignore[operator]
    assert "no container was picked" in response["response"]["warnings"][0]  # type: ignore[index]


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[]", b'{"kind": "AdmissionReview"}',
    json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                "request": {"uid": "x"}}).encode(),
    json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
    json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": 7}}).encode(),
    b"\xff\xfe",
])
def test_what_is_not_an_admission_review_is_invalid(body: bytes) -> None:
    with pytest.raises(InvalidReview):
        review_response(body, IMAGE)
