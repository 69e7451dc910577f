"""The GuardDuty part of an incident card: the finding's facts, the resource's tags, SAMPLE;
and the thread line when new findings join it.

Rendered from the incident alone (`facts["guardduty"]` kept by commands.findings.ingest and
`facts["tags"]` from commands.findings.tags), so any re-render of the card, by any feature,
shows it. Every value from a finding is escaped: finding titles and tags are attacker-
influenced text (an instance's Name tag can be anything) and must never ping or link.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from bot.views import blocks as bk
from bot.views.resources import resource_label
from commands.approvals.plans import finding_target_kind, typed_id
from storage.facts import GUARDDUTY, NOT_AUTOMATIC, GuardDutyFacts, resource_tags
from storage.facts import is_sample as origin_is_sample
from storage.models import Incident

PLAN_BUTTON = "plan_containment"
FINDING_BLOCK = "guardduty_finding"
SEVERITY_ICON = {"low": "🟢", "medium": "🟡", "high": "🟠", "critical": "🔴"}
# Card labels for the tags that matter in triage, keyed like settings.impact.tag_keys.
TAG_LABELS = {
    "name": "Name",
    "data_classification": "Data classification",
    "criticality": "Criticality",
    "owner": "Owner",
}
DEFAULT_TAG_KEYS = {
    "name": "Name",
    "data_classification": "DataClassification",
    "criticality": "Criticality",
    "owner": "Owner",
}
LISTED = 5  # other findings listed by type under the main one


def guardduty_facts(incident: Incident) -> GuardDutyFacts | None:
    summary = GUARDDUTY.get(incident)
    return summary if summary.get("findings") else None


def is_sample(incident: Incident) -> bool:
    summary = guardduty_facts(incident) or {}
    return origin_is_sample(incident) or any(f.get("sample") for f in summary.get("findings", []))


def finding_blocks(
    incident: Incident, *, tag_keys: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Blocks for the card of an incident GuardDuty opened; [] for any other incident."""
    summary = guardduty_facts(incident)
    if summary is None:
        return []
    findings = list(summary["findings"])
    top = findings[0]
    blocks: list[dict[str, Any]] = []
    if is_sample(incident):
        blocks.append(
            bk.context(
                "🧪 *SAMPLE* · GuardDuty generated this finding as an example; "
                "no real activity is behind it."
            )
        )
    blocks.append(_headline(top, summary))
    blocks.append(bk.fields_section(_fact_fields(top)))
    blocks.extend(_not_automatic(incident))
    # The operator's tag names (settings.impact.tag_keys) over the defaults.
    tags = _tag_fields(incident, {**DEFAULT_TAG_KEYS, **(tag_keys or {})})
    if tags:
        blocks.append(bk.fields_section(tags))
    others = findings[1 : 1 + LISTED]
    if others:
        lines = [_other_line(f) for f in others]
        more = summary.get("distinct", len(findings)) - 1 - len(others)
        if more > 0:
            lines.append(f"…and {more} more")
        blocks.append(bk.context(bk.cut("\n".join(lines), bk.SECTION_TEXT)))
    return blocks


def plan_button(incident: Incident) -> dict[str, Any] | None:
    """ "Plan containment" for a resource GuardDuty flagged that containment can act on; the
    value names it (as `/contain` would read it) and the incident."""
    summary = guardduty_facts(incident)
    if summary is None or not incident.resource_id or incident.status == "closed":
        return None
    top = summary["findings"][0]
    kind = finding_target_kind(incident.resource_type, top.get("user_type"))
    if kind is None:
        return None
    if kind in ("instance", "access_key"):
        value = f"{incident.resource_id} {incident.key}"
    else:
        # Assumed-role credentials: the role is what can be contained, not the temporary key.
        name = top.get("user_name") if kind == "role" else incident.resource_id
        if not name:
            return None
        value = json.dumps({"resource_id": typed_id(kind, name), "incident": incident.key})
    return bk.button("Plan containment", PLAN_BUTTON, value, style="danger")


def _headline(top: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    """Rich text: the finding's type and title (attacker-influenced) are shown literally."""
    band = str(top.get("band", ""))
    distinct = int(summary.get("distinct", 1))
    occurrences = int(summary.get("occurrences", top.get("count", 1)))
    tally = f"{distinct} finding{'s' if distinct != 1 else ''}, seen {occurrences} times"
    return bk.rich(
        f"{SEVERITY_ICON.get(band, '')} ",
        bk.styled("GuardDuty:", bold=True),
        " ",
        bk.styled(bk.clip(str(top.get("type", "?")), 200), code=True),
        "\n" + bk.clip(str(top.get("title") or ""), 600) + "\n",
        bk.styled(tally, italic=True),
        block_id=FINDING_BLOCK,
    )


def _fact_fields(top: Mapping[str, Any]) -> list[str]:
    fields = [f"*Severity*\n{_number(top.get('severity'))} ({bk.esc(top.get('band', '?'))})"]
    resource = top.get("resource_id")
    if resource:
        kind = bk.esc(resource_label(top.get("resource_kind") or top.get("resource_type")))
        fields.append(f"*{kind}*\n{bk.code(resource, 200)}")
    if top.get("host_instance_id"):
        fields.append(f"*Host instance*\n{bk.code(top['host_instance_id'], 200)}")
    if top.get("process"):
        fields.append(f"*Process*\n{bk.code(top['process'], 200)}")
    scanned = top.get("object_keys") or top.get("volume_ids")
    if scanned:
        label = "Objects scanned" if top.get("object_keys") else "Volumes scanned"
        fields.append(f"*{label}*\n{bk.esc_cut(', '.join(scanned), 300)}")
    where = " · ".join(bk.esc(v) for v in (top.get("account_id"), top.get("region")) if v)
    if where:
        fields.append(f"*Account · region*\n{where}")
    if top.get("public_ips"):
        fields.append(f"*Public IPs*\n{bk.esc_cut(', '.join(top['public_ips']), 300)}")
    remote = top.get("remote_ip") or top.get("remote_domain")
    if remote:
        fields.append(f"*Remote*\n{bk.code(remote, 200)}")
    if top.get("user_name"):
        fields.append(f"*IAM user*\n{bk.esc_cut(top['user_name'], 200)}")
    if top.get("bucket_names"):
        fields.append(f"*Buckets*\n{bk.esc_cut(', '.join(top['bucket_names']), 300)}")
    fields.append(f"*Count*\n{int(top.get('count') or 1)}")
    fields.append(f"*First seen*\n{_time(top.get('first_seen'))}")
    fields.append(f"*Last seen*\n{_time(top.get('last_seen'))}")
    return fields[:10]


def _not_automatic(incident: Incident) -> list[dict[str, Any]]:
    """What the bot could not do by itself for this finding, and what to do instead."""
    notes = NOT_AUTOMATIC.get(incident)
    if not notes:
        return []
    lines = [
        f"⚠️ *Not done automatically:* {bk.esc(str(what))} · {bk.esc_cut(str(reason), 400)}"
        for what, reason in notes.items()
    ]
    return [bk.context(bk.cut("\n".join(lines), bk.SECTION_TEXT))]


def _tag_fields(incident: Incident, tag_keys: Mapping[str, str]) -> list[str]:
    tags = resource_tags(incident)
    fields = []
    for label_key, label in TAG_LABELS.items():
        tag = tag_keys.get(label_key, DEFAULT_TAG_KEYS[label_key])
        value = tags.get(tag)
        fields.append(f"*{label}*\n{bk.esc_cut(value, 300) if value else '_not tagged_'}")
    return fields


def _other_line(f: Mapping[str, Any]) -> str:
    sample = " · SAMPLE" if f.get("sample") else ""
    return (
        f"{SEVERITY_ICON.get(str(f.get('band')), '')} {bk.code(f.get('type', '?'), 150)} "
        f"{_number(f.get('severity'))} x{int(f.get('count') or 1)}{sample}"
    )


def findings_joined_message(key: str, types: Sequence[str]) -> dict[str, Any]:
    """The thread line when new findings join an incident's card (their types, up to 10)."""
    listed = ", ".join(bk.code(t, 150) for t in types[:10])
    return bk.message(f"New GuardDuty finding(s) joined {key}: {listed}")


def _number(value: Any) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return "?"


def _time(value: Any) -> str:
    if not value:
        return "unknown"
    try:
        return bk.when(dt.datetime.fromisoformat(str(value)))
    except ValueError:
        return bk.esc_cut(value, 60)


def add_to_card(card: dict[str, Any], incident: Incident, **kwargs: Any) -> dict[str, Any]:
    """Insert the GuardDuty blocks and the plan button into a rendered incident card.

    For a card rendered without the card hooks (see bot.guardduty.wiring): the blocks go
    after the card's fields, the button into its actions block.
    """
    extra = finding_blocks(incident, **kwargs)
    if not extra:
        return card
    blocks = list(card.get("blocks", []))
    if any(b.get("block_id") == FINDING_BLOCK for b in blocks):
        return card  # already rendered by the card hooks
    at = next(
        (i + 1 for i, b in enumerate(blocks) if b.get("type") == "section" and "fields" in b), 0
    )
    blocks[at:at] = extra
    button = plan_button(incident)
    if button is not None:
        for block in blocks:
            if block.get("type") == "actions":
                if not any(e.get("action_id") == PLAN_BUTTON for e in block["elements"]):
                    block["elements"] = [button, *block["elements"]][:25]
                break
    text = card.get("text", "")
    if is_sample(incident) and "SAMPLE" not in text:
        text = f"[SAMPLE] {text}"
    return {**card, "text": text, "blocks": bk.limit_blocks(blocks, bk.MESSAGE_BLOCKS)}
