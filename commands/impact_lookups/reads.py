"""What every blast-radius lookup shares: a `Reader` that turns an AWS error into a note, the
lookup's first read (`first_read`: MISSING when the resource is gone), and tag helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from containment.errors import error_code

Clients = Callable[[str, str], Any]  # (service, region) -> boto3 client
MAX_LISTED = 25  # names listed; the counts always cover all of them
DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}


class Unread:
    """The value of a read that failed (the failure is already a note)."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __repr__(self) -> str:
        return self.why


UNREAD = Unread("UNREAD")
MISSING = Unread("MISSING")  # the resource itself is gone: the lookup ends


def labelled(tags: Mapping[str, str], tag_keys: Mapping[str, str]) -> dict[str, str]:
    """The configured tags present on a resource, under their configured labels."""
    return {label: tags[key] for label, key in tag_keys.items() if key in tags}


def tag_dict(items: Iterable[Mapping[str, str]] | None, key: str = "Key") -> dict[str, str]:
    """[{Key, Value}] (or ECS's [{key, value}]) as a dict."""
    value = "value" if key == "key" else "Value"
    return {t[key]: t.get(value, "") for t in items or [] if key in t}


def note_for(exc: BaseException, what: str) -> str:
    code = error_code(exc)
    if code in DENIED:
        return f"{what}: access denied ({code}); grant the read permission to see it"
    return f"{what}: {code}"


class Reader:
    """Runs one read at a time, turning AWS errors into notes."""

    def __init__(self, notes: list[str]) -> None:
        self.notes = notes

    def __call__(
        self, what: str, call: Callable[[], Any], absent: Mapping[str, Any] | None = None
    ) -> Any:
        """`call()`'s answer; `absent[code]` when the error means "not configured";
        UNREAD (and a note) on any other failure."""
        try:
            return call()
        except ClientError as exc:
            if absent is not None and error_code(exc) in absent:
                return absent[error_code(exc)]
            self.notes.append(note_for(exc, what))
        except BotoCoreError as exc:
            self.notes.append(note_for(exc, what))
        return UNREAD


def not_found(what: str) -> str:
    return f"{what} not found (deleted, or in another account or region)"


def first_read(notes: list[str], what: str, call: Callable[[], Any], missing: set[str]) -> Any:
    """The lookup's first read: MISSING (and a note) when the resource is gone, UNREAD (and a
    note) when it could not be read."""
    try:
        return call()
    except ClientError as exc:
        if error_code(exc) in missing:
            notes.append(not_found(what))
            return MISSING
        notes.append(note_for(exc, what))
    except BotoCoreError as exc:
        notes.append(note_for(exc, what))
    return UNREAD
