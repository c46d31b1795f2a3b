"""Fetch every distinct secret once, concurrently, then render the variables.

Fetching and rendering are separate so that ``--watch`` can re-fetch only what
changed and re-render from what it holds: :func:`fetch_all` talks to the
stores, :func:`render` is pure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from envwrap import log
from envwrap.backends import BackendRegistry, Fetched
from envwrap.errors import (
    EnvwrapError,
    InvalidValueError,
    NotFoundError,
    StoreUnavailableError,
)
from envwrap.refs import Locator, Template
from envwrap.secret import Secret
from envwrap.telemetry import audit
from envwrap.values import Backoff

__all__ = ["fetch_all", "render", "select"]


def fetch_all(
    locators: Iterable[Locator],
    registry: BackendRegistry,
    *,
    timeout: float,
    describe: Callable[[Locator], tuple[str | None, str]] = lambda loc: (None, str(loc)),
    backoff: Backoff | None = None,
) -> dict[Locator, Fetched]:
    """Read every locator, each once, all stores at the same time.

    Transient failures (:attr:`EnvwrapError.retryable`) are retried with backoff
    until ``timeout`` seconds have passed; the first permanent failure is raised
    at once, named by ``describe(locator) -> (variable, reference)``.
    """
    backoff = backoff or Backoff()
    deadline = backoff.clock() + timeout
    pending = list(dict.fromkeys(locators))
    results: dict[Locator, Fetched] = {}
    while pending:
        fetched, failures = _fetch_round(pending, registry)
        results.update(fetched)
        permanent = [(loc, err) for loc, err in failures.items() if not err.retryable]
        if permanent:
            locator, error = permanent[0]
            variable, reference = describe(locator)
            raise error.about(variable=variable, reference=reference)
        pending = list(failures)
        if not pending:
            break
        locator, error = next(iter(failures.items()))
        variable, reference = describe(locator)
        if not backoff.wait(deadline):
            raise StoreUnavailableError(
                f"store still unreachable after {timeout:g}s: {error.message}",
                variable=variable,
                reference=reference,
                hint="check the store's address and network, or raise --start-timeout",
            )
        log.warning(
            "store unreachable, retrying",
            variable=variable,
            reference=reference,
            error=error.message,
        )
    return results


def _fetch_round(
    pending: list[Locator], registry: BackendRegistry
) -> tuple[dict[Locator, Fetched], dict[Locator, EnvwrapError]]:
    failures: dict[Locator, EnvwrapError] = {}
    fetched: dict[Locator, Fetched] = {}
    for locator, outcome in registry.read_many(pending).items():
        if isinstance(outcome, EnvwrapError):
            failures[locator] = outcome
            # each failed attempt, for the store metrics (a store down at start)
            audit.record("check", store=locator.scheme, path=locator.path_with_query,
                         outcome=audit.outcome_of(outcome.exit_code))
        else:
            fetched[locator] = outcome
    return fetched, failures


def render(
    templates: Mapping[str, Template], fetched: Mapping[Locator, Fetched]
) -> tuple[dict[str, Secret], list[Secret]]:
    """Assemble each variable from its template; pure.

    Returns the values, and every piece a reference put into them: a DSN's
    password inside ``postgres://${...#user}:${...#password}@db/app`` is a
    secret of its own, for ``--mask`` and for redaction, though the whole value
    is what the program sees.

    Raises :class:`NotFoundError` (65) naming the variable and reference when a
    key or pointer selects nothing, :class:`InvalidValueError` when it selects
    something that is not a text value.
    """
    values: dict[str, Secret] = {}
    pieces: list[Secret] = []
    for name, template in templates.items():
        text: list[str] = []
        for part in template.parts:
            if isinstance(part, str):
                text.append(part)
                continue
            try:
                piece = select(fetched[part.locator].data, part.key)
            except EnvwrapError as err:
                raise err.about(variable=name, reference=part.text) from None
            text.append(piece)
            if not template.is_whole:
                pieces.append(Secret(piece))
        values[name] = Secret("".join(text))
    return values, pieces


def select(data: str | Mapping[str, Any], key: str | None) -> str:
    """The text a reference stands for: the whole secret, a field, or a pointer."""
    if key is None:
        return data if isinstance(data, str) else _as_json(data)
    document: Any = _as_document(data)
    if key.startswith("/"):
        for raw_token in key[1:].split("/"):
            token = raw_token.replace("~1", "/").replace("~0", "~")
            document = _step(document, token, key)
    else:
        document = _step(document, key, key)
    return document if isinstance(document, str) else _as_json(document)


def _as_document(data: str | Mapping[str, Any]) -> Any:
    if not isinstance(data, str):
        return data
    try:
        document = json.loads(data)
    except ValueError:
        raise InvalidValueError(
            "a key was asked for, but the secret is plain text, not JSON",
            hint="drop the '#KEY' to use the whole secret",
        ) from None
    if not isinstance(document, dict | list):
        raise InvalidValueError("a key was asked for, but the secret is not a JSON object")
    return document


def _step(document: Any, token: str, key: str) -> Any:
    if isinstance(document, Mapping):
        if token in document:
            return document[token]
        raise NotFoundError(f"the secret has no key {key!r}")
    if isinstance(document, list) and token.isdigit() and int(token) < len(document):
        return document[int(token)]
    raise NotFoundError(f"the secret has no key {key!r}")


def _as_json(document: Any) -> str:
    if document is None:
        return ""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)
