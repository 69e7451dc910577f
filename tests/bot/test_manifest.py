"""manifest.yml: valid against Slack's own schema and in step with what the code registers."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.slack_signing import REPO_ROOT, SLACK_FIXTURES

MANIFEST = REPO_ROOT / "manifest.yml"
SCHEMA = SLACK_FIXTURES / "manifest.schema.1.0.0.json"

# The bot scope each Web API method needs (docs.slack.dev/reference/methods). Methods that
# need no scope (views.*, auth.test) are absent.
METHOD_SCOPES = {
    "chat_postMessage": "chat:write",
    "chat_update": "chat:write",
    "chat_postEphemeral": "chat:write",
    "chat_delete": "chat:write",
    "conversations_create": "channels:manage",
    "conversations_invite": "channels:manage",
    "conversations_archive": "channels:manage",
    "conversations_info": "channels:read",
    "conversations_history": "channels:history",
    "users_info": "users:read",
    "users_lookupByEmail": "users:read.email",
    "usergroups_list": "usergroups:read",
    "files_upload_v2": "files:write",
    "files_upload": "files:write",
    "reactions_add": "reactions:write",
    "pins_add": "pins:write",
}
# The scope each bot event needs.
EVENT_SCOPES = {
    "app_home_opened": None,
    "app_mention": "app_mentions:read",
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
}


def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def validator() -> jsonschema.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_manifest_is_valid_against_slacks_schema():
    errors = [f"{list(e.path)}: {e.message}" for e in validator().iter_errors(manifest())]
    assert errors == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda m: m["features"]["slash_commands"][0].update(command="incident"),  # no slash
        lambda m: m["features"]["slash_commands"][0].update(usage_hint="x" * 1001),
        lambda m: m["settings"].update(socket_mode_enabled="yes"),
        lambda m: m["display_information"].pop("name"),
    ],
)
def test_schema_check_catches_broken_manifests(breakage):
    broken = copy.deepcopy(manifest())
    breakage(broken)
    assert list(validator().iter_errors(broken)), "the schema accepted a broken manifest"


def test_commands_and_events_match_what_the_code_registers(bot):
    m = manifest()
    declared_commands = {c["command"] for c in m["features"]["slash_commands"]}
    assert declared_commands == bot.app.registered_commands
    declared_events = {e.split(".")[0] for e in m["settings"]["event_subscriptions"]["bot_events"]}
    assert declared_events == bot.app.registered_events
    for command in m["features"]["slash_commands"]:
        assert command["usage_hint"] and command["description"]


def test_interactivity_and_socket_mode_are_on():
    settings = manifest()["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["socket_mode_enabled"] is True
    assert manifest()["features"]["app_home"]["home_tab_enabled"] is True


def _methods_called_in_source() -> set[str]:
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, METHOD_SCOPES)) + r")\b")
    found: set[str] = set()
    for package in ("bot", "commands"):
        for path in Path(REPO_ROOT, package).rglob("*.py"):
            found.update(pattern.findall(path.read_text()))
    return found


def test_bot_scopes_are_exactly_what_the_code_needs():
    m = manifest()
    scopes = set(m["oauth_config"]["scopes"]["bot"])
    needed = {"commands"} | {METHOD_SCOPES[name] for name in _methods_called_in_source()}
    needed |= {
        EVENT_SCOPES[e]
        for e in m["settings"]["event_subscriptions"]["bot_events"]
        if EVENT_SCOPES.get(e)
    }
    assert scopes == needed, f"missing: {needed - scopes}; not needed: {scopes - needed}"
