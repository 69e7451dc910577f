"""The one client factory's cache: reused per key, the least recently used dropped past
its bound."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest

from containment import clients


def test_the_cache_reuses_a_key_and_drops_the_least_recently_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clients, "_clients", OrderedDict())
    monkeypatch.setattr(clients, "MAX_CACHED_CLIENTS", 2)
    made: list[str] = []

    def get(key: str) -> Any:
        return clients.cached_client((key,), lambda: made.append(key) or object())

    a = get("a")
    b = get("b")
    assert get("a") is a and made == ["a", "b"]  # reused; "a" is now the most recent
    get("c")  # past the bound: "b", the least recently used, goes
    assert get("a") is a and made == ["a", "b", "c"]
    assert get("b") is not b and made == ["a", "b", "c", "b"]
