"""``aws-ssm://NAME[?region=R]`` and ``arn:aws:ssm:REGION:ACCOUNT:parameter/NAME``:
AWS Systems Manager Parameter Store.

* Parameters are read with GetParameters, 10 per call, SecureString decrypted
  (WithDecryption); where a policy denies GetParameters, one by one with
  GetParameter. String, StringList (its comma-separated text) and SecureString
  values are used as they are.
* A hierarchical name starts with '/': ``aws-ssm:///prod/db/password``. An ARN is
  passed to AWS as it is, which is what parameters shared from another account need.
* ``Fetched.version`` is the parameter's Version; :meth:`probe_many` reads the
  versions with GetParameters too. That call returns the values as well -- SSM
  has no batched metadata-only read (DescribeParameters filters by name but is
  paginated and lists no shared parameters) -- and the values are dropped at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from envwrap.backends._aws import AwsBackend, BatchCall, by_id, list_of_mappings
from envwrap.backends._aws_errors import aws_errors, foreign_reply, map_error_code
from envwrap.backends.contract import Fetched, checked_version
from envwrap.errors import EnvwrapError, ReferenceSyntaxError
from envwrap.refs import Locator

if TYPE_CHECKING:
    from mypy_boto3_ssm.client import SSMClient

__all__ = ["ParameterStoreBackend"]

T = TypeVar("T")


class ParameterStoreBackend(AwsBackend):
    scheme = "aws-ssm"
    service = "ssm"
    label = "AWS SSM Parameter Store"
    batch_size = 10

    def validate(self, locator: Locator) -> None:
        name = locator.path
        if "/" in name and not name.startswith(("/", "arn:")):
            # AWS answers a bare ValidationException; say what is wrong instead
            raise ReferenceSyntaxError(
                "a parameter name with '/' must start with '/'",
                hint=f"write aws-ssm:///{name}",
            )

    def read(self, locator: Locator) -> Fetched:
        return self._read_one(locator, _fetched)

    def read_many(self, locators: Sequence[Locator]) -> list[Fetched | EnvwrapError]:
        return self.batched(locators, self._get_parameters(_fetched), self.read)

    def probe(self, locator: Locator) -> str | None:
        return self._read_one(locator, _version)

    def probe_many(
        self, locators: Sequence[Locator]
    ) -> list[str | Fetched | EnvwrapError | None]:
        # GetParameters, 10 per call, like read_many; see the module docstring
        found = self.batched(locators, self._get_parameters(_version), self.probe)
        return list(found)

    def _read_one(self, locator: Locator, extract: Callable[[Mapping[str, Any]], T]) -> T:
        client: SSMClient = self.client(locator)
        with aws_errors(self.label):
            response = client.get_parameter(Name=locator.path, WithDecryption=True)
        parameter = response.get("Parameter")
        if not isinstance(parameter, Mapping):
            raise foreign_reply(self.label, "GetParameter")
        return extract(parameter)

    def _get_parameters(
        self, extract: Callable[[Mapping[str, Any]], T]
    ) -> BatchCall[T]:
        def call(client: Any, names: Sequence[str]) -> dict[str, T | EnvwrapError]:
            ssm: SSMClient = client
            response = ssm.get_parameters(Names=list(names), WithDecryption=True)
            found, invalid = response.get("Parameters", []), response.get("InvalidParameters", [])
            if not (list_of_mappings(found) and isinstance(invalid, list)):
                return dict.fromkeys(names, foreign_reply(self.label, "GetParameters"))
            answered = by_id(found, extract, _ids_of)
            for name in invalid:
                if isinstance(name, str):
                    answered[name] = map_error_code("ParameterNotFound", self.label)
            return answered

        return call


def _ids_of(parameter: Mapping[str, Any]) -> list[str]:
    """Every name a request may have used: name or ARN, with its ':selector' if any."""
    selector = str(parameter.get("Selector") or "")
    ids = []
    for key in ("Name", "ARN"):
        if parameter.get(key):
            ids.append(str(parameter[key]))
            if selector:
                ids.append(str(parameter[key]) + selector)
    return ids


def _fetched(parameter: Mapping[str, Any]) -> Fetched:
    value = parameter.get("Value", "")
    if not isinstance(value, str):
        raise foreign_reply("AWS SSM Parameter Store", "the value is not text")
    return Fetched(value, version=_version(parameter))


def _version(parameter: Mapping[str, Any]) -> str | None:
    """The parameter's Version, a whole number in every reply SSM sends; checked."""
    version = parameter.get("Version")
    if isinstance(version, str):  # a number is a number; text is not SSM's
        raise foreign_reply("AWS SSM Parameter Store", "the version is not a number")
    return checked_version(version)
