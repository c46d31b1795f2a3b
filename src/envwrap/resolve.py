"""Fetch every distinct secret once, concurrently, then render the variables.

Fetching and rendering are separate so that ``--watch`` can re-fetch only what
changed and re-render from what it holds: :func:`fetch_all` talks to the
stores, :func:`render` is pure.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from envwrap import log
from envwrap.backends import BackendRegistry, Fetched
from envwrap.backends.registry import NoAnswer
from envwrap.errors import (
    BackendMissingError,
    EnvwrapError,
    InvalidValueError,
    NotFoundError,
    StoreUnavailableError,
)
from envwrap.near_miss import likely_reference
from envwrap.refs import Locator, Template
from envwrap.secret import Secret, known_values
from envwrap.telemetry import audit
from envwrap.values import Backoff

__all__ = ["ATTEMPT_GRACE", "arm_redaction", "fetch_all", "render", "select"]

#: seconds an attempt under way at the --start-timeout deadline may take to finish:
#: a slow first read (a cold SDK, a loaded machine) still counts, a store dripping
#: a byte a second does not hold start-up for ever (docs/reference.md)
ATTEMPT_GRACE = 5.0


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
    at once, named by ``describe(locator) -> (variable, reference)``. The
    timeout is a deadline: no attempt starts after it, and a store still
    answering :data:`ATTEMPT_GRACE` seconds after it (a byte a second) is left
    behind.

    Every value read is known to the redaction filter before anything is logged
    or audited about it.
    """
    backoff = backoff or Backoff()
    deadline = backoff.clock() + timeout
    # the stores' waits run on the monotonic clock, whatever clock the backoff has
    store_deadline = time.monotonic() + timeout + ATTEMPT_GRACE
    pending = list(dict.fromkeys(locators))
    results: dict[Locator, Fetched] = {}
    #: why each locator failed: a store cut short by the deadline keeps the reason it
    #: gave before (its 503, its foreign reply), which says more than "no answer"
    reasons: dict[Locator, EnvwrapError] = {}
    while pending:
        fetched, failures = _fetch_round(pending, registry, store_deadline)
        arm_redaction(fetched.values())
        results.update(fetched)
        for locator, failure in failures.items():
            if not (isinstance(failure, NoAnswer) and locator in reasons):
                reasons[locator] = failure
        permanent = [(loc, err) for loc, err in failures.items() if not err.retryable]
        if permanent:
            locator, error = permanent[0]
            variable, reference = describe(locator)
            raise _with_likely_form(error.about(variable=variable, reference=reference))
        pending = list(failures)
        if not pending:
            break
        locator = pending[0]
        error = reasons[locator]
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


def _with_likely_form(error: EnvwrapError) -> EnvwrapError:
    """A scheme no backend serves may be a typo (``ref+vualt://``): say which form
    was probably meant, as the warning about bare near misses does."""
    if isinstance(error, BackendMissingError) and error.reference:
        meant = likely_reference(error.reference)
        if meant is not None:
            error.hint = f"did you mean {meant}?"
    return error


def _fetch_round(
    pending: list[Locator], registry: BackendRegistry, deadline: float
) -> tuple[dict[Locator, Fetched], dict[Locator, EnvwrapError]]:
    failures: dict[Locator, EnvwrapError] = {}
    fetched: dict[Locator, Fetched] = {}
    for locator, outcome in registry.read_many(pending, deadline=deadline).items():
        if isinstance(outcome, EnvwrapError):
            failures[locator] = outcome
            # each failed attempt, for the store metrics (a store down at start)
            audit.record("check", store=locator.scheme, path=locator.path_with_query,
                         outcome=audit.outcome_of(outcome.exit_code))
        else:
            fetched[locator] = outcome
    return fetched, failures


def arm_redaction(fetched: Iterable[Fetched]) -> None:
    """Make every text a secret holds known to the redaction filter: the secret
    as read, and each string or number inside a key-value or JSON secret."""
    for item in fetched:
        _remember(item.data)
        if isinstance(item.data, str) and item.data[:1] in ("{", "["):
            with contextlib.suppress(ValueError):
                _remember(json.loads(item.data))


def _remember(document: Any) -> None:
    if isinstance(document, str):
        known_values.add(document)
    elif isinstance(document, Mapping):
        for value in document.values():
            _remember(value)
    elif isinstance(document, list):
        for value in document:
            _remember(value)
    elif isinstance(document, int | float) and not isinstance(document, bool):
        known_values.add(json.dumps(document))


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
        raise NotFoundError(f"the secret has no key {key!r}{_keys_there(document)}")
    if isinstance(document, list) and token.isdigit() and int(token) < len(document):
        return document[int(token)]
    if isinstance(document, list):
        raise NotFoundError(f"the secret has no key {key!r} (there: a list of "
                            f"{len(document)} items, numbered from 0)")
    raise NotFoundError(f"the secret has no key {key!r}")


#: at most this many key names are listed in a "no such key" message
LISTED_KEYS = 20


def _keys_there(document: Mapping[str, Any]) -> str:
    """The names of the keys there are, for a "no such key" message: names, never values."""
    if not document:
        return " (it has no keys)"
    names = sorted(_printable(str(name)) for name in document)
    more = f" and {len(names) - LISTED_KEYS} more" if len(names) > LISTED_KEYS else ""
    return f" (its keys: {', '.join(names[:LISTED_KEYS])}{more})"


def _printable(name: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in name[:60])


def _as_json(document: Any) -> str:
    if document is None:
        return ""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)
