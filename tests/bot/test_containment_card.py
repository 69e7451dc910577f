"""The approval card and the argument parsers, without Slack or AWS."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from bot.listeners.containment import ContainArgs, parse_contain_args, parse_plan_value
from bot.views.approval_card import CardView, StepView, approval_card
from commands.errors import UserError
from tests.slack_fake import MAX_MESSAGE_BLOCKS, MAX_SECTION_TEXT, _block_errors

pytestmark = pytest.mark.dates  # CI reruns these with the clock shifted (.ci/run)

EVIL = "<!channel> <https://evil|click> & co"
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def view(**kw: object) -> CardView:
    base: dict[str, object] = {
        "request_id": 7,
        "kind": "contain",
        "status": "pending",
        "incident_key": "INC-3",
        "incident_title": EVIL,
        "target_type": "instance",
        "target_id": "i-0123456789abcdef0",
        "region": "us-east-1",
        "account_id": "111122223333",
        "requested_by": "W111",
        "requested_at": NOW,
        "reason": EVIL,
        "expires_at": NOW + dt.timedelta(minutes=30),
        "decided_by": None,
        "decided_at": None,
        "decision_reason": None,
        "dry_run": False,
        "plan": {
            "steps": [
                {
                    "action": "isolate",
                    "summary": "swap groups",
                    "mutating": True,
                    "calls": [
                        {"text": "ec2.ModifyNetworkInterfaceAttribute(<eni>)", "mutating": True}
                    ],
                },
            ],
            "blast_radius": {
                "tags": {"Owner": EVIL},
                "labelled": {"owner": EVIL},
                "attached": ["2 network interface(s)"],
            },
        },
    }
    base.update(kw)
    return CardView(**base)  # type: ignore[arg-type]


def mrkdwn_texts(blocks: object) -> list[str]:
    found: list[str] = []
    if isinstance(blocks, dict):
        if blocks.get("type") == "mrkdwn":
            found.append(blocks["text"])
        for value in blocks.values():
            found.extend(mrkdwn_texts(value))
    elif isinstance(blocks, list):
        for item in blocks:
            found.extend(mrkdwn_texts(item))
    return found


def test_user_text_never_pings_or_links() -> None:
    card = approval_card(view())
    for text in [card["text"], *mrkdwn_texts(card["blocks"])]:
        assert "<!channel>" not in text and "<https://evil" not in text
    flat = json.dumps(card["blocks"])
    assert "&lt;!channel&gt;" in flat and "&lt;eni&gt;" in flat


def test_huge_plan_lists_every_call_within_slack_limits() -> None:
    steps = [
        {
            "action": f"step{i}",
            "mutating": True,
            "calls": [
                {"text": f"ec2.Call{i}_{j}(" + "x" * 200 + ")", "mutating": True} for j in range(30)
            ],
        }
        for i in range(3)
    ]
    card = approval_card(view(plan={"steps": steps}))
    blocks = card["blocks"]
    assert _block_errors(blocks, max_blocks=MAX_MESSAGE_BLOCKS) == []
    assert all(len(t) <= MAX_SECTION_TEXT for t in mrkdwn_texts(blocks))
    flat = json.dumps(blocks)
    assert all(f"Call{i}_{j}(" in flat for i in range(3) for j in range(30))
    assert blocks[-1]["type"] == "actions"
    labels = [el["text"]["text"] for el in blocks[-1]["elements"]]
    assert labels[0].startswith("Approve") and labels[1].startswith("Reject")
    assert "confirm" in blocks[-1]["elements"][0]


def test_outcome_shows_failed_steps_and_follow_up_buttons() -> None:
    steps = [
        StepView("capture", "succeeded"),
        StepView("iam", "failed", "AccessDenied in PutRolePolicy: <denied>"),
    ]
    card = approval_card(
        view(status="partial", steps=steps, decided_by="U0APPROVER1", decided_at=NOW)
    )
    flat = json.dumps(card["blocks"])
    assert "Partially failed" in flat and "AccessDenied in PutRolePolicy: &lt;denied&gt;" in flat
    labels = [
        el["text"]["text"] for b in card["blocks"] if b["type"] == "actions" for el in b["elements"]
    ]
    assert labels == ["Retry what is left", "Roll back"]


def test_missing_evidence_is_named_on_a_succeeded_card() -> None:
    card = approval_card(
        view(
            status="succeeded",
            steps=[StepView("capture", "succeeded"), StepView("isolate", "succeeded")],
            missing_evidence=[
                {
                    "evidence": "screenshot",
                    "action": "capture",
                    "error": "ResponseParserError: <garbled>",
                }
            ],
            decided_by="U0APPROVER1",
            decided_at=NOW,
        )
    )
    flat = json.dumps(card["blocks"], ensure_ascii=False)
    assert "Succeeded* — ⚠️ evidence missing" in flat
    assert "Evidence missing (1):" in flat
    assert "screenshot (capture): ResponseParserError: &lt;garbled&gt;" in flat
    labels = [
        el["text"]["text"] for b in card["blocks"] if b["type"] == "actions" for el in b["elements"]
    ]
    assert labels == ["Roll back"]  # nothing to retry: every step ran
    assert "evidence missing" not in json.dumps(approval_card(view(status="succeeded")))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("i-0123456789abcdef0", ("i-0123456789abcdef0", None, None)),
        ("i-0123456789abcdef0 inc-4", ("i-0123456789abcdef0", "INC-4", None)),
        (
            "AKIAABCDEFGHIJKLMNOP INC-2 leaked on GitHub",
            ("AKIAABCDEFGHIJKLMNOP", "INC-2", "leaked on GitHub"),
        ),
        ("i-0123456789abcdef0 beaconing out", ("i-0123456789abcdef0", None, "beaconing out")),
        (
            "i-0123456789abcdef0 INC-2 --volatile beaconing",
            ("i-0123456789abcdef0", "INC-2", "beaconing", True),
        ),
        ("--no-volatile i-0123456789abcdef0", ("i-0123456789abcdef0", None, None, False)),
        ("i-0123456789abcdef0 \u2014volatile", ("i-0123456789abcdef0", None, None, True)),
    ],
)
def test_parse_contain_args(text: str, expected: tuple[object, ...]) -> None:
    assert parse_contain_args(text) == ContainArgs(*expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "sg-123 INC-1",
        "INC-1",
        "i-0123456789abcdef0 --memory",
        "--volatile",
        "i-0123456789abcdef0 --volatile --no-volatile",
    ],
)
def test_parse_contain_args_refuses(text: str) -> None:
    with pytest.raises(UserError):
        parse_contain_args(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("i-0123456789abcdef0 INC-3", ("i-0123456789abcdef0", "INC-3")),
        (
            '{"resource_id": "AKIAABCDEFGHIJKLMNOP", "incident": "inc-9"}',
            ("AKIAABCDEFGHIJKLMNOP", "INC-9"),
        ),
        ("i-0123456789abcdef0", ("i-0123456789abcdef0", None)),
    ],
)
def test_parse_plan_value(value: str, expected: tuple[str, str | None]) -> None:
    assert parse_plan_value(value) == expected


def test_parse_plan_value_refuses_garbage() -> None:
    with pytest.raises(UserError):
        parse_plan_value("nothing here")
