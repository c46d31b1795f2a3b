"""What the admission webhook does to a pod: an AdmissionReview in, one out.

Pure functions, no I/O, so that every decision is testable without a server.

A pod opts in with the label ``envwrap/inject: "true"``. The webhook then adds
an in-memory ``emptyDir``, an init container that copies the self-contained
envwrap into it (``envwrap install``), and prefixes the ``command`` of each
picked container with ``/envwrap/envwrap [options] --``. It never reads a
secret, never asks an image registry for an entrypoint, and never refuses a
pod: every answer is ``allowed``, with a warning where something was left alone.
"""

from __future__ import annotations

import base64
import functools
import json
import shlex

from envwrap.errors import EnvwrapError, ReferenceSyntaxError
from envwrap.refs import parse_value

__all__ = [
    "ANNOTATION_CONTAINERS",
    "ANNOTATION_OPTIONS",
    "ANNOTATION_STATUS",
    "INSTALLER_NAME",
    "LABEL",
    "MOUNT_PATH",
    "VOLUME_NAME",
    "InvalidReview",
    "Mutation",
    "plan",
    "review_response",
]

LABEL = "envwrap/inject"
ANNOTATION_OPTIONS = "envwrap/options"
ANNOTATION_CONTAINERS = "envwrap/containers"
#: set on every pod the webhook changed: a second pass (a retried request,
#: a reinvocation) recognises it and changes nothing
ANNOTATION_STATUS = "envwrap/status"
VOLUME_NAME = "envwrap-bundle"
INSTALLER_NAME = "envwrap-install"
MOUNT_PATH = "/envwrap"
#: where the bundle lives in the envwrap-bundle image (Dockerfile.sidecar, target bundle)
BUNDLE_COMMAND = "/opt/envwrap/envwrap"
#: the bundle is under 60 MiB; the volume counts against the pod's memory
VOLUME_SIZE = "128Mi"
API_VERSION = "admission.k8s.io/v1"


class InvalidReview(ValueError):
    """The request body is not an AdmissionReview this webhook can answer (HTTP 400)."""


class Mutation:
    """The decision for one pod: a JSON patch (possibly empty) and warnings for the user."""

    __slots__ = ("injected", "patch", "pod", "warnings")

    def __init__(
        self, patch: list[dict[str, object]], warnings: list[str], injected: list[str]
    ) -> None:
        self.patch = patch
        self.warnings = warnings
        self.injected = injected
        #: "namespace/name" of the pod, for the log ("name*" for a generateName)
        self.pod = ""


def review_response(body: bytes, image: str) -> tuple[dict[str, object], Mutation]:
    """The AdmissionReview to send back for the request ``body``.

    Raises :class:`InvalidReview` when ``body`` is not an ``admission.k8s.io/v1``
    AdmissionReview with a request and its ``uid``.
    """
    try:
        review = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidReview("the body is not JSON") from exc
    if not isinstance(review, dict):
        raise InvalidReview("the body is not a JSON object")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != "AdmissionReview":
        raise InvalidReview(f"expected kind AdmissionReview, apiVersion {API_VERSION}")
    request = review.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise InvalidReview("the AdmissionReview has no request with a uid")
    mutation = plan(request, image)
    metadata = _dict(_dict(request.get("object")).get("metadata"))
    name = metadata.get("name") or f"{metadata.get('generateName', '')}*"
    mutation.pod = f"{request.get('namespace', '')}/{name}"
    response: dict[str, object] = {"uid": request["uid"], "allowed": True}
    if mutation.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(
            json.dumps(mutation.patch, separators=(",", ":")).encode()
        ).decode()
    if mutation.warnings:
        response["warnings"] = mutation.warnings
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}, mutation


def _none() -> Mutation:
    return Mutation([], [], [])


def plan(request: dict[str, object], image: str) -> Mutation:
    """The mutation of the pod in an AdmissionReview ``request``; empty when it is not ours.

    Not ours: another kind, an operation other than CREATE, a pod without the
    label, a pod already mutated.
    """
    kind = request.get("kind")
    if not isinstance(kind, dict) or kind.get("kind") != "Pod" or kind.get("group", "") != "":
        return _none()
    if request.get("operation") != "CREATE" or request.get("subResource"):
        return _none()
    pod = request.get("object")
    if not isinstance(pod, dict):
        return _none()
    metadata = _dict(pod.get("metadata"))
    labels = _dict(metadata.get("labels"))
    annotations = _dict(metadata.get("annotations"))
    spec = _dict(pod.get("spec"))
    if labels.get(LABEL) != "true" or ANNOTATION_STATUS in annotations:
        return _none()
    if any(_dict(v).get("name") == VOLUME_NAME for v in _list(spec.get("volumes"))):
        return _none()
    return _inject(spec, annotations, image)


def _inject(spec: dict[str, object], annotations: dict[str, object], image: str) -> Mutation:
    warnings: list[str] = []
    containers = [_dict(c) for c in _list(spec.get("containers"))]
    raw = annotations.get(ANNOTATION_OPTIONS)
    if raw is not None and not isinstance(raw, str):
        warnings.append(f"envwrap: the annotation {ANNOTATION_OPTIONS} is not a string")
        return Mutation([], warnings, [])
    options, problem = _options(raw or "")
    if problem:
        warnings.append(problem)
        if options is None:
            return Mutation([], warnings, [])
    assert options is not None
    picked = _picked(containers, annotations.get(ANNOTATION_CONTAINERS), warnings)
    patch: list[dict[str, object]] = []
    injected: list[str] = []
    for index, container in enumerate(containers):
        name = str(container.get("name", ""))
        if index not in picked:
            continue
        command = container.get("command")
        if not isinstance(command, list) or not command:
            warnings.append(
                f"envwrap: container {name!r} has no 'command' in the pod spec, so envwrap "
                "left it alone (it does not look up image entrypoints): set its command "
                "to inject it"
            )
            continue
        args = _list(container.get("args"))
        where = f"/spec/containers/{index}"
        patch.append({
            "op": "replace",
            "path": f"{where}/command",
            "value": [f"{MOUNT_PATH}/envwrap", *options, "--", *command, *args],
        })
        if "args" in container:
            patch.append({"op": "remove", "path": f"{where}/args"})
        mount = {"name": VOLUME_NAME, "mountPath": MOUNT_PATH, "readOnly": True}
        if isinstance(container.get("volumeMounts"), list):
            patch.append({"op": "add", "path": f"{where}/volumeMounts/-", "value": mount})
        else:
            patch.append({"op": "add", "path": f"{where}/volumeMounts", "value": [mount]})
        injected.append(name)
    if not injected:
        if not picked:
            warnings.append(
                f"envwrap: the pod has {LABEL}: \"true\" but no container was picked (none "
                f"has a reference in its env; name them in the annotation {ANNOTATION_CONTAINERS})"
            )
        return Mutation([], warnings, [])
    volume = {"name": VOLUME_NAME, "emptyDir": {"medium": "Memory", "sizeLimit": VOLUME_SIZE}}
    if isinstance(spec.get("volumes"), list):
        patch.append({"op": "add", "path": "/spec/volumes/-", "value": volume})
    else:
        patch.append({"op": "add", "path": "/spec/volumes", "value": [volume]})
    installer = _installer(image)
    # First, so that the pod's own init containers could use envwrap too.
    if _list(spec.get("initContainers")):
        patch.append({"op": "add", "path": "/spec/initContainers/0", "value": installer})
    else:
        patch.append({"op": "add", "path": "/spec/initContainers", "value": [installer]})
    status = _pointer_escape(ANNOTATION_STATUS)
    if annotations:
        patch.append({"op": "add", "path": f"/metadata/annotations/{status}", "value": "injected"})
    else:
        patch.append({"op": "add", "path": "/metadata/annotations",
                      "value": {ANNOTATION_STATUS: "injected"}})
    return Mutation(patch, warnings, injected)


def _installer(image: str) -> dict[str, object]:
    """The init container: the bundle image copies its envwrap into the shared volume."""
    return {
        "name": INSTALLER_NAME,
        "image": image,
        "command": [BUNDLE_COMMAND, "install", MOUNT_PATH],
        "volumeMounts": [{"name": VOLUME_NAME, "mountPath": MOUNT_PATH}],
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            # the copy lands in a memory-backed volume, charged to this container
            "limits": {"memory": "160Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


@functools.lru_cache(maxsize=256)
def _options(raw: str) -> tuple[tuple[str, ...] | None, str | None]:
    """The annotation's options as words, and a warning when they are wrong.

    Options that envwrap would reject still go into the command: the container
    then fails at start with envwrap's message, instead of running with its
    references unresolved. Only text that cannot even be split is left out.
    Cached: the pods of one workload carry the same annotation.
    """
    if not raw.strip():
        return (), None
    try:
        words = shlex.split(raw)
    except ValueError as exc:
        return None, (
            f"envwrap: the annotation {ANNOTATION_OPTIONS} cannot be split into words ({exc}); "
            "the pod was not changed"
        )
    if "--" in words:
        return None, f"envwrap: the annotation {ANNOTATION_OPTIONS} must not hold '--'"
    from envwrap.config import parse_args

    try:
        parse_args([*words, "--", "true"], {})
    except EnvwrapError as exc:
        return tuple(words), f"envwrap: the annotation {ANNOTATION_OPTIONS} is wrong: {exc}"
    return tuple(words), None


def _picked(containers: list[dict[str, object]], names: object, warnings: list[str]) -> set[int]:
    """Indexes of the containers to inject: those named, else those with a reference."""
    if isinstance(names, str) and names.strip():
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        by_name = {str(c.get("name")): i for i, c in enumerate(containers)}
        for name in wanted:
            if name not in by_name:
                warnings.append(
                    f"envwrap: the annotation {ANNOTATION_CONTAINERS} names {name!r}, "
                    "which is not a container of this pod"
                )
        return {by_name[n] for n in wanted if n in by_name}
    return {i for i, c in enumerate(containers) if _holds_reference(c)}


def _holds_reference(container: dict[str, object]) -> bool:
    for item in _list(container.get("env")):
        value = _dict(item).get("value")
        if not isinstance(value, str):
            continue
        try:
            if parse_value(value) is not None:
                return True
        except ReferenceSyntaxError:
            return True  # meant as a reference: envwrap will say what is wrong with it
    return False


def _pointer_escape(key: str) -> str:
    """A JSON pointer token (RFC 6901): ``~`` and ``/`` escaped."""
    return key.replace("~", "~0").replace("/", "~1")


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
