"""record_findings: upsert by GuardDuty id, open/join incidents, atomic batches."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from commands.findings import ingest as ingest_module
from commands.findings.errors import BadFinding
from commands.findings.ingest import Ingested, record_findings, sync_incident
from commands.findings.normalize import NormalizedFinding, normalize, normalize_finding
from commands.incidents import set_status
from storage.db import Database
from storage.models import Finding, Incident, TimelineEvent
from storage.timeline import verify_chain
from tests.commands.findings.guardduty_fixtures import ec2_detail, load_json

INSTANCE = "i-05746eb48123455e0"
MIN_SEVERITY = 4.0


def record(database: Database, *details: dict[str, Any], **kwargs: Any) -> list[Ingested]:
    findings = [normalize_finding(d) for d in details]
    return record_normalized(database, findings, **kwargs)


def record_normalized(
    database: Database, findings: list[NormalizedFinding], **kwargs: Any
) -> list[Ingested]:
    kwargs.setdefault("min_severity", MIN_SEVERITY)
    with database.session() as session:
        return record_findings(session=session, findings=findings, channel_id="C0INC", **kwargs)


def count(database: Database, model: Any) -> int:
    with database.read_session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def incidents(database: Database) -> list[Incident]:
    with database.read_session() as session:
        return list(session.scalars(select(Incident).order_by(Incident.number)))


def finding_row(database: Database, finding_id: str) -> Finding:
    with database.read_session() as session:
        return session.scalars(select(Finding).where(Finding.finding_id == finding_id)).one()


def event_kinds(database: Database, incident_id: int) -> list[str]:
    with database.read_session() as session:
        return list(
            session.scalars(
                select(TimelineEvent.kind)
                .where(TimelineEvent.incident_id == incident_id)
                .order_by(TimelineEvent.seq)
            )
        )


def test_first_finding_for_a_resource_opens_an_incident(database: Database) -> None:
    (result,) = record(database, ec2_detail())
    assert result.outcome == "opened"
    assert result.resource_id == INSTANCE
    (incident,) = incidents(database)
    assert (result.incident_id, result.incident_key) == (incident.id, "INC-1")
    assert incident.severity == "medium"  # severity 5
    assert incident.title == "Canary:EC2/Stateless.IntegTest"
    assert (incident.resource_id, incident.resource_type) == (INSTANCE, "Instance")
    assert (incident.account_id, incident.region, incident.channel_id) == (
        "123456789012",
        "us-east-1",
        "C0INC",
    )
    assert incident.created_by == "guardduty"
    assert incident.facts["tags"] == {"Name": "ssh-22-open"}
    row = finding_row(database, "16afba5c5c43e07c9e3e5e2e544e95df")
    assert (row.incident_id, row.count, row.severity) == (incident.id, 1, 5.0)
    assert row.raw["resource"]["instanceDetails"]["instanceId"] == INSTANCE
    assert event_kinds(database, incident.id) == ["incident.opened"]


@pytest.mark.parametrize(
    ("severity", "band"), [(4.0, "medium"), (7.2, "high"), (8.9, "high"), (9.0, "critical")]
)
def test_incident_severity_comes_from_the_band(
    database: Database, severity: float, band: str
) -> None:
    record(database, ec2_detail(severity=severity))
    assert incidents(database)[0].severity == band


def test_repeat_updates_count_and_last_seen_without_a_new_incident(database: Database) -> None:
    record(database, ec2_detail())
    (result,) = record(
        database,
        ec2_detail(
            service__count=7,
            service__eventLastSeen="2017-11-01T05:00:00Z",
            updatedAt="2017-11-01T05:15:00.000Z",
        ),
    )
    assert result.outcome == "repeat"
    assert result.card_stale
    assert count(database, Incident) == 1
    assert count(database, Finding) == 1
    row = finding_row(database, "16afba5c5c43e07c9e3e5e2e544e95df")
    assert row.count == 7
    assert row.last_seen.isoformat() == "2017-11-01T05:00:00+00:00"
    assert event_kinds(database, result.incident_id) == ["incident.opened", "finding.repeat"]


def test_identical_redelivery_changes_nothing(database: Database) -> None:
    (first,) = record(database, ec2_detail())
    (again,) = record(database, ec2_detail())
    assert again.outcome == "unchanged"
    assert not again.card_stale
    assert again.incident_key == first.incident_key
    assert event_kinds(database, first.incident_id) == ["incident.opened"]


def test_an_older_update_never_goes_backwards(database: Database) -> None:
    record(
        database,
        ec2_detail(
            service__count=9,
            service__eventLastSeen="2017-11-02T00:00:00Z",
            updatedAt="2017-11-02T00:00:00Z",
            severity=8,
        ),
    )
    (result,) = record(database, ec2_detail(service__count=3, severity=5))
    assert result.outcome == "unchanged"
    row = finding_row(database, "16afba5c5c43e07c9e3e5e2e544e95df")
    assert (row.count, row.severity) == (9, 8.0)
    assert row.last_seen.isoformat() == "2017-11-02T00:00:00+00:00"


@pytest.mark.parametrize(
    "changes", [{"service__archived": True}, {"severity": 3.9}, {"severity": 1}]
)
def test_archived_or_low_findings_are_recorded_but_open_nothing(
    database: Database, changes: dict[str, Any]
) -> None:
    (result,) = record(database, ec2_detail(**changes))
    assert result.outcome == "recorded"
    assert result.incident_id is None and not result.card_stale
    assert count(database, Finding) == 1
    assert count(database, Incident) == 0
    assert finding_row(database, "16afba5c5c43e07c9e3e5e2e544e95df").incident_id is None


def test_min_severity_is_the_configured_one(database: Database) -> None:
    (result,) = record(database, ec2_detail(severity=5), min_severity=7.0)
    assert result.outcome == "recorded"


def test_a_finding_raised_above_the_bar_later_opens_then(database: Database) -> None:
    record(database, ec2_detail(severity=2))
    (result,) = record(database, ec2_detail(severity=7.5, updatedAt="2017-11-01T00:00:00Z"))
    assert result.outcome == "opened"
    assert incidents(database)[0].severity == "high"


def test_new_finding_on_the_same_resource_joins_and_escalates(database: Database) -> None:
    (first,) = record(database, ec2_detail())
    (second,) = record(
        database, ec2_detail(id="second-finding", type="Backdoor:EC2/Spambot", severity=8)
    )
    assert second.outcome == "joined"
    assert second.incident_id == first.incident_id
    assert count(database, Incident) == 1
    (incident,) = incidents(database)
    assert incident.severity == "high"
    assert event_kinds(database, incident.id) == [
        "incident.opened",
        "incident.severity",
        "finding.joined",
    ]
    assert finding_row(database, "second-finding").incident_id == incident.id


def test_a_lower_joining_finding_keeps_the_severity(database: Database) -> None:
    record(database, ec2_detail(severity=9))
    record(database, ec2_detail(id="other", severity=5))
    assert incidents(database)[0].severity == "critical"


def test_a_closed_incident_is_not_joined(database: Database) -> None:
    (first,) = record(database, ec2_detail())
    with database.session() as session:
        incident = session.get(Incident, first.incident_id)
        set_status(session=session, incident=incident, actor="U1", status="closed", summary="ok")
    (second,) = record(database, ec2_detail(id="later-finding"))
    assert second.outcome == "opened"
    assert second.incident_key == "INC-2"


def test_other_resources_get_their_own_incidents(database: Database) -> None:
    iam = load_json("custodian__iam-duty-event.json")["detail"]
    results = record(database, ec2_detail(), iam)
    assert [r.outcome for r in results] == ["opened", "opened"]
    assert [r.resource_id for r in results] == [INSTANCE, "GeneratedFindingAccessKeyId"]
    assert [i.title for i in incidents(database)][1].startswith("[SAMPLE] API ")


def test_findings_without_a_resource_open_one_incident_each(database: Database) -> None:
    log = {
        **load_json("notify-slack__guardduty_finding_high.json")["detail"],
    }
    results = record(database, log, {**log, "id": "sample-id-3"})
    assert [r.outcome for r in results] == ["opened", "opened"]
    assert [i.severity for i in incidents(database)] == ["critical", "critical"]


def test_a_batch_with_repeats_of_one_finding_records_one_row(database: Database) -> None:
    batch = [ec2_detail(service__count=n, updatedAt=f"2017-11-01T00:0{n}:00Z") for n in (1, 2, 3)]
    results = record(database, *batch, ec2_detail(id="joiner"))
    assert [r.outcome for r in results] == ["opened", "repeat", "repeat", "joined"]
    assert count(database, Finding) == 2
    assert finding_row(database, "16afba5c5c43e07c9e3e5e2e544e95df").count == 3
    # Counts that grew within the batch that opened the incident are part of its start.
    assert event_kinds(database, results[0].incident_id) == ["incident.opened", "finding.joined"]
    later = [ec2_detail(service__count=n, updatedAt=f"2017-11-01T00:1{n}:00Z") for n in (4, 5)]
    record(database, *later, ec2_detail(id="joiner", service__count=2))
    with database.read_session() as session:
        repeat = session.scalars(
            select(TimelineEvent).where(TimelineEvent.kind == "finding.repeat")
        ).one()  # one event for the whole batch
    assert repeat.summary == (
        "GuardDuty finding(s) seen again: Canary:EC2/Stateless.IntegTest count 3→5; "
        "Canary:EC2/Stateless.IntegTest count 1→2"
    )


def test_deferred_repeats_wait_for_sync_incident(database: Database) -> None:
    (first,) = record(database, ec2_detail())
    findings = [normalize_finding(ec2_detail(service__count=9, updatedAt="2017-11-02T00:00:00Z"))]
    with database.session() as session:
        (result,) = record_findings(
            session=session, findings=findings, min_severity=4, defer_repeats=True
        )
    assert result.outcome == "repeat" and result.incident_key == "INC-1"
    assert event_kinds(database, first.incident_id) == ["incident.opened"]
    assert finding_row(database, "16afba5c5c43e07c9e3e5e2e544e95df").count == 9
    with database.session() as session:
        incident = session.get(Incident, first.incident_id)
        assert sync_incident(session=session, incident=incident) is True
        assert incident.facts["guardduty"]["occurrences"] == 9
        assert sync_incident(session=session, incident=incident) is False  # nothing new
    assert event_kinds(database, first.incident_id) == ["incident.opened", "finding.repeat"]


def test_sample_findings_are_labelled(database: Database) -> None:
    detail = load_json("guardduty-waf-acl__gd2acl_test_event.json")["detail"]
    record(database, {**detail, "severity": 5})
    (incident,) = incidents(database)
    assert incident.title.startswith("[SAMPLE] 198.51.100.0 is performing SSH brute force")
    assert incident.facts["sample"] is True


def test_bad_input_stores_nothing(database: Database) -> None:
    payload = {"Findings": [ec2_detail(), ec2_detail(id="x", severity="very high")]}
    with pytest.raises(BadFinding):
        record_normalized(database, normalize(payload))
    assert count(database, Finding) == count(database, Incident) == 0


def test_a_failure_mid_batch_rolls_everything_back(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = ingest_module.new_incident

    def failing_second(**kwargs: Any) -> tuple[Incident, Any]:
        calls.append(kwargs)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(**kwargs)

    monkeypatch.setattr(ingest_module, "new_incident", failing_second)
    iam = load_json("custodian__iam-duty-event.json")["detail"]
    with pytest.raises(RuntimeError):
        record(database, ec2_detail(), iam)
    assert count(database, Finding) == count(database, Incident) == 0
    assert count(database, TimelineEvent) == 0
    monkeypatch.undo()
    # The numbers given back by the rollback are reused: no gap.
    assert [r.incident_key for r in record(database, ec2_detail(), iam)] == ["INC-1", "INC-2"]


def test_the_timeline_chain_stays_valid(database: Database) -> None:
    (first,) = record(database, ec2_detail())
    record(database, ec2_detail(service__count=2, updatedAt="2017-11-01T00:00:00Z"))
    record(database, ec2_detail(id="joiner", severity=9))
    with database.read_session() as session:
        incident = session.get(Incident, first.incident_id)
        report = verify_chain(conn=session, incident=incident)
    assert report.ok and report.events == 4


def test_incident_facts_summarise_its_findings_for_the_card(database: Database) -> None:
    (first,) = record(database, ec2_detail())
    record(database, ec2_detail(id="joiner", severity=8.5, type="Backdoor:EC2/Spambot"))
    record(database, ec2_detail(service__count=4, updatedAt="2017-11-01T00:00:00Z"))
    with database.read_session() as session:
        facts = session.get(Incident, first.incident_id).facts["guardduty"]
    assert (facts["distinct"], facts["occurrences"]) == (2, 5)
    assert [f["id"] for f in facts["findings"]] == ["joiner", "16afba5c5c43e07c9e3e5e2e544e95df"]
    top, canary = facts["findings"]
    assert (top["type"], top["band"], top["count"]) == ("Backdoor:EC2/Spambot", "high", 1)
    # The repeat batch only carried the canary; the joiner's network facts were kept.
    assert top["public_ips"] == ["11.111.111.1"] and top["remote_ip"] == "0.0.0.0"
    assert (canary["count"], canary["first_seen"]) == (4, "2017-10-31T23:16:23+00:00")
    assert canary["sample"] is False and canary["resource_id"] == INSTANCE
