"""Lenient but strict-enough conversions for the value types real GuardDuty payloads carry.

Real payloads disagree on types: severities and counts arrive as numbers or numeric strings,
booleans as `false` or `'false'`, times as ISO strings (with `T` or a space, up to nanosecond
fractions), epoch seconds or epoch milliseconds. Anything that cannot mean what the field needs
raises BadFinding with a one-line reason naming the field.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from commands.findings.errors import BadFinding

# Epoch values above this are milliseconds (1e11 s is the year 5138).
_MS_THRESHOLD = 1e11
_MAX_TEXT = 80
# The largest count the database stores (PostgreSQL INTEGER); GuardDuty's real counts are far
# smaller, so anything above is malformed rather than clipped.
MAX_COUNT = 2**31 - 1
# Identifier columns are String(200) (finding ids are 32 hex digits, resource ids < 100).
MAX_IDENTIFIER = 200


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def number(value: Any, field: str) -> float:
    """A finite float from a JSON number or a numeric string; bools are not numbers."""
    if isinstance(value, bool) or value is None:
        raise BadFinding(f"{field} must be a number, got {_show(value)}")
    if isinstance(value, int | float):
        try:
            result = float(value)
        except OverflowError:  # an int beyond any float, e.g. 10**400
            raise BadFinding(f"{field} must be a finite number, got {_show(value)}") from None
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise BadFinding(f"{field} must be a number, got {_show(value)}") from None
    else:
        raise BadFinding(f"{field} must be a number, got {type(value).__name__}")
    if not math.isfinite(result):
        raise BadFinding(f"{field} must be a finite number, got {_show(value)}")
    return result


def integer(value: Any, field: str) -> int:
    """A whole number from an int, an integral float or a numeric string."""
    result = number(value, field)
    if not result.is_integer():
        raise BadFinding(f"{field} must be a whole number, got {_show(value)}")
    return int(result)


def boolean(value: Any, field: str) -> bool:
    """`true`/`false` as JSON booleans or the strings boto3-derived dumps sometimes carry."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise BadFinding(f"{field} must be true or false, got {_show(value)}")


def text(value: Any, field: str) -> str:
    """A string the database can store: no NUL (PostgreSQL refuses it) and no unpaired
    UTF-16 surrogate such as a lone "\\ud800" escape (not encodable as UTF-8)."""
    if not isinstance(value, str):
        raise BadFinding(f"{field} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise BadFinding(f"{field} must not contain a NUL character")
    if not value.isascii() and not _encodable(value):
        raise BadFinding(f"{field} contains an unpaired UTF-16 surrogate; send valid Unicode")
    return value


def storable(value: str) -> bool:
    """Whether `value` can go into an identifier column as it is (see `text`)."""
    return (
        len(value) <= MAX_IDENTIFIER
        and "\x00" not in value
        and (value.isascii() or _encodable(value))
    )


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def identifier(value: Any, field: str, *, limit: int = MAX_IDENTIFIER) -> str | None:
    """An optional id that must fit its column (`limit` characters)."""
    result = optional_text(value, field)
    if result is not None and len(result) > limit:
        raise BadFinding(f"{field} is {len(result)} characters long; the limit is {limit}")
    return result


def count(value: Any, field: str) -> int:
    """A non-negative whole number the database can store."""
    result = integer(value, field)
    if result < 0:
        raise BadFinding(f"{field} must not be negative, got {result}")
    if result > MAX_COUNT:
        raise BadFinding(f"{field} must be at most {MAX_COUNT}, got {_show(value)}")
    return result


def optional_text(value: Any, field: str) -> str | None:
    """A string, or None for absent/null/empty values."""
    if value is None:
        return None
    result = text(value, field).strip()
    return result or None


def timestamp(value: Any, field: str) -> datetime:
    """A UTC datetime from an ISO 8601 string, epoch seconds or epoch milliseconds."""
    if isinstance(value, bool) or value is None:
        raise BadFinding(f"{field} must be a time, got {_show(value)}")
    if isinstance(value, str):
        stripped = value.strip()
        try:
            return _from_epoch(float(stripped), field, value)
        except ValueError:
            pass
        return _from_iso(stripped, field, value)
    if isinstance(value, int | float):
        return _from_epoch(float(value), field, value)
    raise BadFinding(f"{field} must be a time, got {type(value).__name__}")


def _from_epoch(seconds: float, field: str, original: Any) -> datetime:
    if not math.isfinite(seconds) or seconds < 0:
        raise BadFinding(f"{field} is not a valid time: {_show(original)}")
    if seconds >= _MS_THRESHOLD:
        seconds /= 1000.0
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise BadFinding(f"{field} is not a valid time: {_show(original)}") from None


def _from_iso(value: str, field: str, original: Any) -> datetime:
    candidate = value[:-1] + "+00:00" if value[-1:] in {"Z", "z"} else value
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        raise BadFinding(f"{field} is not a valid time: {_show(original)}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def optional_timestamp(value: Any, field: str) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return timestamp(value, field)
