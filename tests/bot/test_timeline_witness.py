"""`incident-bot verify` against an attacker who holds the database: every case caught, named.

The bot anchors heads the way a serving process does (bot.listeners.anchors.anchor_due, into
the fake Slack thread and a moto bucket under Object Lock); the attacker then edits the SQLite
file directly; `incident-bot verify` runs in-process (so it reaches the same moto).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import yaml
from moto import mock_aws
from sqlalchemy import text

from bot.cli import main
from bot.listeners.anchors import anchor_due
from bot.runtime import make_runtime
from bot.settings import load_settings
from commands.incidents import open_incident
from storage.db import Database
from storage.migrate import downgrade, upgrade
from storage.timeline import TimelineKey, append_event, event_hash, head_seal, stream_event_rows
from tests.slack_fake import FakeSlack

pytestmark = pytest.mark.dates

KEY = "k" * 40
ATTACKER_KEY = "a" * 40
BUCKET = "ir-evidence"
TOKEN = "xoxb-test-token"


@dataclass
class Ran:
    code: int
    out: str
    err: list[str]


@dataclass
class World:
    env: dict[str, str]
    url: str
    run: Callable[..., Ran]


@pytest.fixture
def world(tmp_path: Path, fake_slack: FakeSlack, clock, monkeypatch, capsys) -> Iterator[World]:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    upgrade(url)
    config = tmp_path / "incident-bot.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "slack": {"incident_channel": "C0INCIDENT"},
                "containment": {"evidence_bucket": BUCKET},
            }
        )
    )
    env = {
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": "s",
        "INCIDENT_BOT_SLACK_API_URL": fake_slack.base_url,
        "DATABASE_URL": url,
        "INCIDENT_BOT_CONFIG": str(config),
        "INCIDENT_BOT_TIMELINE_KEY": KEY,
    }
    for name in list(os.environ):
        if name.startswith(("SLACK_", "INCIDENT_BOT_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)

    def run(*argv: str, **overrides: str | None) -> Ran:
        for name, value in {**env, **overrides}.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(list(argv))
        out, err = capsys.readouterr()
        return Ran(exited.value.code or 0, out, err.strip().splitlines())

    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(
            Bucket=BUCKET, ObjectLockEnabledForBucket=True
        )
        runtime = make_runtime(load_settings(env), clock=clock)
        try:
            card = runtime.client.chat_postMessage(channel="C0INCIDENT", text="INC-1 card")
            with runtime.database.session() as s:
                inc = open_incident(
                    session=s, title="c2 beacon", created_by="U1", channel_id="C0INCIDENT"
                )
                inc.thread_ts = card["ts"]
                for i in range(9):
                    append_event(session=s, incident=inc, actor="U1", kind="note", summary=f"{i}")
            assert anchor_due(runtime) == ["INC-1"]  # the "opened" anchor: 10 events
            yield World(env, url, run)
        finally:
            runtime.database.dispose()


def _sql(url: str, statement: str, **params: object) -> None:
    db = Database(url, clock=None)  # type: ignore[arg-type]  # raw SQL: no clock needed
    with db.engine.begin() as conn:
        conn.execute(text(statement), params)
    db.dispose()


def _rechain(url: str, *, key: TimelineKey | None, rewrite: dict[int, str]) -> None:
    """What a database holder can do: edit events, recompute every digest, fix the head."""
    db = Database(url, clock=None)  # type: ignore[arg-type]
    with db.engine.begin() as conn:
        inc = conn.execute(text("SELECT id, number FROM incidents")).one()
        prev = "0" * 64
        for row in list(stream_event_rows(conn=conn, incident_id=inc.id)):
            summary = rewrite.get(row.seq, row.summary)
            digest = event_hash(
                key=key,
                prev_hash=prev,
                incident_number=inc.number,
                seq=row.seq,
                occurred_at=row.occurred_at,
                actor=row.actor,
                kind=row.kind,
                summary=summary,
                details=row.details,
            )
            conn.execute(
                text(
                    "UPDATE timeline_events SET summary = :s, prev_hash = :p, hash = :h "
                    "WHERE incident_id = :i AND seq = :q"
                ),
                {"s": summary, "p": prev, "h": digest, "i": inc.id, "q": row.seq},
            )
            prev = digest
            count = row.seq
        seal = (
            head_seal(key=key, incident_number=inc.number, count=count, head=prev) if key else None
        )
        conn.execute(
            text(
                "UPDATE incidents SET timeline_head = :h, timeline_count = :c, "
                "timeline_key_id = :k, timeline_seal = :s"
            ),
            {"h": prev, "c": count, "k": key.id if key else None, "s": seal},
        )
    db.dispose()


def test_an_untouched_incident_names_every_witness_it_checked(world) -> None:
    r = world.run("verify", "INC-1")
    assert r.code == 0, r.err
    key_id = TimelineKey.from_secret(KEY).id
    assert r.out.splitlines() == [
        f"INC-1: chain: 10 events, chain intact, keyed with {key_id} (the configured key), "
        "head seal matches",
        f"INC-1: S3 anchors: 1 in s3://{BUCKET}/incident-bot/timeline-anchors/INC-1/, all match",
        "INC-1: Slack anchors: 1 in the incident's thread (C0INCIDENT), all match",
    ]


def test_what_it_could_not_check_is_said(world) -> None:
    r = world.run("verify", "INC-1", SLACK_BOT_TOKEN=None, INCIDENT_BOT_CONFIG=None)
    assert r.code == 0, r.err
    assert "INC-1: S3 anchors: not checked: no containment.evidence_bucket is configured" in r.out
    assert "INC-1: Slack anchors: not checked: SLACK_BOT_TOKEN is not set" in r.out


def test_truncation_with_a_rewritten_head_is_caught(world) -> None:
    db = Database(world.url, clock=None)  # type: ignore[arg-type]
    with db.engine.connect() as conn:
        hashes = [r.hash for r in stream_event_rows(conn=conn, incident_id=1)]
    db.dispose()
    _sql(world.url, "DELETE FROM timeline_events WHERE seq > 4")
    _sql(world.url, "UPDATE incidents SET timeline_head = :h, timeline_count = 4", h=hashes[3])
    r = world.run("verify", "INC-1")
    assert r.code == 1
    assert r.err[-1].startswith("INC-1: TAMPERED: event #4: the chain head's seal does not match")
    assert any("witnessed 10 event(s), the database has 4: events were removed" in e for e in r.err)


def test_a_rewritten_middle_event_with_a_recomputed_unkeyed_chain_is_caught(world) -> None:
    # Without the key the holder can only recompute plain SHA-256, and erase the key id.
    _rechain(world.url, key=None, rewrite={5: "nothing happened"})
    r = world.run("verify", "INC-1")
    assert r.code == 1
    key_id = TimelineKey.from_secret(KEY).id
    assert r.err[-1] == (
        f"INC-1: TAMPERED: the S3 anchor of {r.err[-1].split('anchor of ')[1].split(' ')[0]} "
        f"(opened) says the chain was keyed with {key_id}, the database says unkeyed: the "
        "chain was re-keyed or recomputed"
    )
    assert any("Slack anchor" in e and "the database says unkeyed" in e for e in r.err)


def test_a_deleted_incident_is_caught(world) -> None:
    _sql(world.url, "DELETE FROM timeline_events")
    _sql(world.url, "DELETE FROM incidents")
    r = world.run("verify", "INC-1")
    assert r.code == 1
    assert r.err[-1].startswith("INC-1: TAMPERED: INC-1 is missing from the database, but 1")
    assert r.err[-1].endswith("the incident was deleted")
    # Rewinding the number counter too leaves the Object Lock anchor as the witness.
    _sql(world.url, "UPDATE counters SET value = 0")
    r = world.run("verify", "INC-1")
    assert r.code == 1
    assert "the S3 anchor of" in r.err[-1] and "the incident was deleted" in r.err[-1]
    assert "Slack anchors: not checked: the incident's thread is only known" in r.out


def test_a_replaced_key_is_caught_and_both_ids_named(world) -> None:
    attacker = TimelineKey.from_secret(ATTACKER_KEY)
    ours = TimelineKey.from_secret(KEY)
    _rechain(world.url, key=attacker, rewrite={5: "nothing happened"})
    r = world.run("verify", "INC-1")
    assert r.code == 1
    assert r.err[-1] == (
        f"INC-1: TAMPERED: key: the database says the chain is keyed with {attacker.id}, but "
        f"the configured key is {ours.id}: the key id was replaced, or this is not the key it "
        "was chained with"
    )
    assert any(f"keyed with {ours.id}, the database says {attacker.id}" in e for e in r.err)


def test_the_wrong_key_at_the_operators_end_is_an_operator_error(world) -> None:
    r = world.run("verify", "INC-1", INCIDENT_BOT_TIMELINE_KEY=ATTACKER_KEY)
    assert r.code == 2
    assert len(r.err) == 1 and "which its 2 anchor(s) confirm" in r.err[0]
    r = world.run("verify", "INC-1", INCIDENT_BOT_TIMELINE_KEY=None)
    assert r.code == 2
    assert r.err[0].endswith("set INCIDENT_BOT_TIMELINE_KEY to that key to verify it")


def test_a_short_key_is_one_line(world) -> None:
    r = world.run("verify", "INC-1", INCIDENT_BOT_TIMELINE_KEY="short")
    assert r.code == 2
    assert r.err == [
        "incident-bot: error: INCIDENT_BOT_TIMELINE_KEY: Value error, must be at least 32 bytes "
        "(e.g. from `openssl rand -hex 32`) (check the environment)"
    ]


def test_a_legacy_database_verifies_as_legacy_unkeyed(tmp_path, clock, monkeypatch, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url)
    db = Database(url, clock=clock)  # no key: chained with plain SHA-256, as before 0003
    with db.session() as s:
        open_incident(session=s, title="old", created_by="U1")
    db.dispose()
    # The database as it was before migration 0003, then upgraded: no key id, no seal.
    downgrade(url, revision="0002")
    upgrade(url)
    for name in list(os.environ):
        if name.startswith(("SLACK_", "INCIDENT_BOT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("INCIDENT_BOT_TIMELINE_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["verify", "INC-1"])
    out = capsys.readouterr().out
    assert exited.value.code in (0, None)
    assert "INC-1: chain: 1 events, chain intact, not keyed (legacy, unkeyed: plain SHA-256" in out


def test_a_serving_process_anchors_an_opened_then_resolved_incident_in_its_thread(
    bot, caplog
) -> None:
    from bot.listeners import anchors

    assert bot.command("open c2 beacon").status_code == 200
    card = bot.slack.wait_for("chat.postMessage", lambda c: "blocks" in c.args)
    bot.idle()
    bot.runtime.options.anchor_sweep_seconds = 0.05
    with caplog.at_level(logging.WARNING, logger="bot.listeners.anchors"):
        anchors.start(bot.runtime)  # what bot.server.start_services does in `run`
    assert "timeline UNKEYED: INCIDENT_BOT_TIMELINE_KEY is not set" in caplog.text

    def anchor(milestone: str) -> Callable[[object], bool]:
        return lambda c: f"Timeline anchor for INC-1 ({milestone})" in c.args.get("text", "")

    opened = bot.slack.wait_for("chat.postMessage", anchor("opened"))
    assert opened.args["thread_ts"] == card.response["ts"]
    assert "key `unkeyed`" in opened.args["text"]  # this bot runs without a timeline key
    assert bot.command("resolve INC-1 reimaged the host").status_code == 200
    bot.idle()
    resolved = bot.slack.wait_for("chat.postMessage", anchor("resolved"))
    assert resolved.args["thread_ts"] == card.response["ts"]
    bot.runtime.services.anchor_sweeper.stop()  # its last sweep has recorded what it posted
    assert anchors.anchor_due(bot.runtime) == []  # each milestone is anchored once
    posted = bot.slack.calls_for("chat.postMessage", ok_only=True)
    assert [m for m in ("opened", "resolved") for c in posted if anchor(m)(c)] == [
        "opened",
        "resolved",
    ]


def _store_evidence(world: World, clock) -> dict[str, object]:
    """The evidence step as containment runs it, its result on the timeline as the executor
    records it (a containment.step.succeeded event carrying the step's evidence)."""
    from bot.clock import SystemClock
    from containment.actions.evidence import StoreEvidence
    from containment.context import ActionContext
    from containment.registry import RunState
    from containment.targets import Target

    # moto judges Object Lock retention on the machine's clock: so does this context.
    ctx = ActionContext(incident_key="INC-1", evidence_bucket=BUCKET, now=SystemClock().now)
    target = Target(kind="access_key", resource_id="AKIAEXAMPLE", region="us-east-1")
    facts = {"captured_at": "2026-11-27T12:00:00+00:00", "status": "Active"}
    result = StoreEvidence().apply(target, ctx, RunState(facts=facts, captured=facts))
    assert result.status == "succeeded", result.error
    db = Database(world.url, clock=clock, timeline_key=TimelineKey.from_secret(KEY))
    try:
        from commands.incidents import get_incident

        with db.session() as s:
            append_event(
                session=s,
                incident=get_incident(session=s, key="INC-1"),
                actor="system",
                kind="containment.step.succeeded",
                summary=f"Step evidence succeeded: {result.note}",
                details=result.to_dict(),
            )
    finally:
        db.dispose()
    return result.evidence


def test_evidence_is_reread_and_its_hash_compared(world, clock) -> None:
    import json as _json

    evidence = _store_evidence(world, clock)
    assert evidence["object_lock"]["mode"] == "COMPLIANCE"
    r = world.run("verify", "INC-1", "--evidence")
    assert r.code == 0, r.err
    assert "evidence: 1 object(s) re-read from s3://ir-evidence/incidents/INC-1/" in r.out
    assert "all match" in r.out.splitlines()[-1]

    # Whoever holds the bucket writes a new manifest version with another hash.
    s3 = boto3.client("s3", region_name="us-east-1")
    key = "incidents/INC-1/manifest.json"
    manifest = _json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    manifest["objects"][0]["sha256"] = "0" * 64
    s3.put_object(
        Bucket=BUCKET, Key=key, Body=_json.dumps(manifest).encode(), ChecksumAlgorithm="SHA256"
    )
    r = world.run("verify", "INC-1", "--evidence")
    assert r.code == 1
    assert len(r.err) == 2  # the object's hash, and the manifest against the timeline
    assert r.err[-1].startswith("INC-1: TAMPERED: s3://ir-evidence/incidents/INC-1/access_key/")
    assert "differs from the recorded" in r.err[-1]


def test_evidence_without_a_readable_bucket_is_an_operator_error(world, clock) -> None:
    _store_evidence(world, clock)
    config = Path(world.env["INCIDENT_BOT_CONFIG"])
    config.write_text(
        yaml.safe_dump(
            {
                "slack": {"incident_channel": "C0INCIDENT"},
                "containment": {"evidence_bucket": "gone"},
            }
        )
    )
    r = world.run("verify", "INC-1", "--evidence")
    assert r.code == 2
    assert len(r.err) == 1 and "could not read the evidence in s3://gone/" in r.err[0]
