"""envwrap's own messages, on stderr, as text or JSON lines.

Deliberately not built on :mod:`logging` for envwrap's own messages: importing
it costs more than the rest of a no-reference start-up. Libraries that do log
(botocore, urllib3, hvac) are captured by :func:`capture_library_logs` once a
backend is loaded, capped at WARNING whatever ``--log-level`` says (botocore's
DEBUG output carries whole response bodies, secrets included), and every line,
ours or theirs, passes through :func:`envwrap.secret.redact`.
"""

from __future__ import annotations

import sys
import time

from envwrap.secret import redact

__all__ = [
    "LEVELS",
    "capture_library_logs",
    "configure",
    "debug",
    "enabled",
    "error",
    "info",
    "notice",
    "warning",
]

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_NAMES = {number: name for name, number in LEVELS.items()}
_state: dict[str, int | bool] = {"level": LEVELS["warning"], "json": False, "captured": False}


def configure(level: str = "warning", fmt: str = "text") -> None:
    _state["level"] = LEVELS[level]
    _state["json"] = fmt == "json"


def enabled(level: str) -> bool:
    return LEVELS[level] >= _state["level"]


def debug(message: str, **fields: object) -> None:
    _emit(10, message, fields)


def info(message: str, **fields: object) -> None:
    _emit(20, message, fields)


def notice(message: str, **fields: object) -> None:
    """What a person wants to read at the default level though nothing is wrong (a
    rotation applied): shown with warnings, labelled ``notice``."""
    _emit(30, message, fields, label="notice")


def warning(message: str, **fields: object) -> None:
    _emit(30, message, fields)


def error(message: str, **fields: object) -> None:
    _emit(40, message, fields)


def _emit(level: int, message: str, fields: dict[str, object], source: str = "envwrap",
          label: str | None = None) -> None:
    if level < int(_state["level"]):
        return
    clean = {k: redact(str(v)) for k, v in fields.items() if v is not None}
    message = redact(message)
    if _state["json"]:
        import json

        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "level": label or _NAMES.get(level, str(level)),
            "logger": source,
            "message": message,
            **clean,
        }
        line = json.dumps(record, ensure_ascii=False)
    else:
        extra = "".join(f" {k}={_quote(v)}" for k, v in clean.items())
        prefix = "envwrap" if source == "envwrap" else f"envwrap [{source}]"
        line = f"{prefix}: {label or _NAMES.get(level, '')}: {message}{extra}"
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr closed: nowhere left to tell


def _quote(value: str) -> str:
    return value if value and " " not in value and '"' not in value else f'"{value}"'


def capture_library_logs() -> None:
    """Route the :mod:`logging` records of libraries through envwrap's redacting output."""
    if _state.get("captured"):
        return
    _state["captured"] = True
    import logging

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                text = record.getMessage()
            except Exception:  # a library's bad format string must not crash us
                text = str(record.msg)
            _emit(record.levelno, text, {}, source=record.name)

    root = logging.getLogger()
    root.handlers[:] = [_Handler()]
    root.setLevel(max(logging.WARNING, int(_state["level"])))
    logging.captureWarnings(True)
