"""``aws-sm://NAME-OR-ARN[?version-stage=S|version-id=V][&region=R][#KEY]`` and
``arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[#KEY]``: AWS Secrets Manager.

* Secrets at their current version (AWSCURRENT) are read with
  BatchGetSecretValue, 20 per call. That call returns current values only, so a
  locator with ``?version-stage=`` or ``?version-id=`` is read on its own with
  GetSecretValue. Where a policy denies the batch call, secrets are read one by
  one with GetSecretValue.
* ``Fetched.data`` is the SecretString as it is (the resolver selects
  ``#KEY`` / ``#/pointer`` from JSON text); a SecretBinary must be UTF-8 text.
* ``Fetched.version`` is the VersionId; :meth:`probe` returns the VersionId that
  carries the referenced stage, from DescribeSecret, without reading the value.
* AWSPENDING is read only when a reference asks for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from envwrap.backends._aws import AwsBackend, by_id, list_of_mappings
from envwrap.backends._aws_errors import aws_errors, foreign_reply, map_error_code
from envwrap.backends.contract import Fetched, SecretExists, checked_version
from envwrap.backends.fanout import each
from envwrap.errors import EnvwrapError, InvalidValueError, NotFoundError
from envwrap.refs import Locator

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager.client import SecretsManagerClient

__all__ = ["SecretsManagerBackend"]

CURRENT = "AWSCURRENT"
#: the random suffix Secrets Manager appends to a secret's ARN: "-" and 6 characters
_ARN_SUFFIX_LENGTH = 7


class SecretsManagerBackend(AwsBackend):
    scheme = "aws-sm"
    service = "secretsmanager"
    label = "AWS Secrets Manager"
    batch_size = 20

    def read(self, locator: Locator) -> Fetched:
        client: SecretsManagerClient = self.client(locator)
        version_id = locator.param("version-id")
        stage = locator.param("version-stage")
        with aws_errors(self.label):
            if version_id:
                response = client.get_secret_value(SecretId=locator.path, VersionId=version_id)
            elif stage:
                response = client.get_secret_value(SecretId=locator.path, VersionStage=stage)
            else:
                response = client.get_secret_value(SecretId=locator.path)
        return _fetched(response)

    def read_many(self, locators: Sequence[Locator]) -> list[Fetched | EnvwrapError]:
        return self.batched(locators, self._batch_get, self.read, batchable=_is_current)

    def _batch_get(self, client: Any, ids: Sequence[str]) -> dict[str, Fetched | EnvwrapError]:
        sm: SecretsManagerClient = client
        response = sm.batch_get_secret_value(SecretIdList=list(ids))
        values, errors = response.get("SecretValues", []), response.get("Errors", [])
        if not (list_of_mappings(values) and list_of_mappings(errors)):
            failure = foreign_reply(self.label, "BatchGetSecretValue")
            return dict.fromkeys(ids, failure)
        answered = by_id(values, _fetched, _ids_of)
        for error in errors:
            secret_id = error.get("SecretId")
            if isinstance(secret_id, str) and secret_id:
                answered[secret_id] = map_error_code(str(error.get("ErrorCode", "")), self.label)
        return answered

    def probe(self, locator: Locator) -> str | None:
        """The VersionId now carrying the referenced stage (DescribeSecret, no value).

        A ``?version-id=`` reference never changes: it is returned without a call.
        """
        version_id = locator.param("version-id")
        if version_id:
            return version_id
        stage = locator.param("version-stage") or CURRENT
        client: SecretsManagerClient = self.client(locator)
        with aws_errors(self.label):
            response = client.describe_secret(SecretId=locator.path)
        versions = response.get("VersionIdsToStages", {})
        if not isinstance(versions, Mapping):
            raise foreign_reply(self.label, "DescribeSecret")
        for candidate, stages in versions.items():
            if isinstance(stages, list) and stage in stages:
                return checked_version(candidate)
        raise NotFoundError(f"{self.label}: no version of the secret carries the stage {stage}")

    def probe_many(
        self, locators: Sequence[Locator]
    ) -> list[str | Fetched | EnvwrapError | None]:
        # DescribeSecret has no batch form: one call per secret, concurrently
        return each(self.probe, locators, limit=self.max_concurrency, name="aws")

    def write(
        self, locator: Locator, data: Mapping[str, str], *, replace: bool = False
    ) -> str | None:
        """One JSON secret (``envwrap import``): CreateSecret, or with ``replace`` a new
        AWSCURRENT version (PutSecretValue) of a secret that exists; the VersionId."""
        import json

        client: SecretsManagerClient = self.client(locator)
        text = json.dumps(dict(data))
        with aws_errors(self.label):
            try:
                response: Mapping[str, Any] = client.create_secret(
                    Name=locator.path, SecretString=text
                )
            except client.exceptions.ResourceExistsException:
                if not replace:
                    raise SecretExists(
                        f"{self.label}: the secret exists already",
                        hint="pass --force to write a new version of it",
                    ) from None
                response = client.put_secret_value(SecretId=locator.path, SecretString=text)
        version = response.get("VersionId")
        return str(version) if version else None


def _is_current(locator: Locator) -> bool:
    """Can BatchGetSecretValue (current values only) serve this locator?"""
    return locator.param("version-id") is None and locator.param("version-stage") in (
        None,
        CURRENT,
    )


def _ids_of(entry: Mapping[str, Any]) -> list[str]:
    """Every id a request may have used for this secret: name, ARN, partial ARN."""
    ids = [str(entry[k]) for k in ("Name", "ARN") if entry.get(k)]
    arn = entry.get("ARN")
    if arn:
        ids.append(str(arn)[:-_ARN_SUFFIX_LENGTH])
    return ids


def _fetched(entry: Mapping[str, Any]) -> Fetched:
    """The secret of a GetSecretValue reply (or a batch's entry), checked: every
    such reply names the secret's ARN and version, and holds its value as text or
    bytes; anything else comes from something that is not Secrets Manager."""
    version = entry.get("VersionId")
    text = entry.get("SecretString")
    binary = entry.get("SecretBinary")
    if (not isinstance(entry.get("ARN"), str) or not isinstance(version, str)
            or not isinstance(text, str | None) or not isinstance(binary, bytes | None)):
        raise foreign_reply("AWS Secrets Manager", "GetSecretValue")
    if text is None:
        if binary is None:
            raise NotFoundError("AWS Secrets Manager: the secret version has no value")
        try:
            text = binary.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidValueError(
                "AWS Secrets Manager: the secret is binary data, not UTF-8 text",
                hint="store text in SecretString (base64-encode binary data)",
            ) from None
    return Fetched(text, version=version or None)
