"""An alert storm over real HTTP: a storm card for all, one card per incident, batched updates,
nothing dropped; and under Slack's own latency and rate limits."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import boto3
from sqlalchemy import func, select

from storage.models import Finding, Incident
from tests.bot.guardduty.conftest import GuardDutyBot
from tests.commands.findings.guardduty_fixtures import ec2_detail, load_json
from tests.slack_fake import Call, SlackManners

RESOURCES = 40
FINDINGS_PER_RESOURCE = 2
DELIVERIES = 480  # 80 distinct findings, the rest repeats
THREADS = 10
UPDATE_INTERVAL = 1.0
STORM_WINDOW = 6.0  # seconds


def storm(seed: int = 11) -> tuple[list[bytes], dict[str, int]]:
    """EventBridge events: every finding once, then repeats with growing counts, shuffled."""
    rng = random.Random(seed)
    envelope = load_json("custodian__ec2-duty-event.json")
    ids = [(f"storm-{r}-{k}", r) for r in range(RESOURCES) for k in range(FINDINGS_PER_RESOURCE)]
    sends = [finding_id for finding_id, _ in ids]
    sends += [rng.choice(ids)[0] for _ in range(DELIVERIES - len(ids))]
    rng.shuffle(sends)
    resource_of = dict(ids)
    counts: dict[str, int] = defaultdict(int)
    bodies = []
    for finding_id in sends:
        counts[finding_id] += 1
        n = counts[finding_id]
        detail = ec2_detail(
            id=finding_id,
            severity=rng.choice([4, 5.5, 7, 8.2]),
            service__count=n,
            updatedAt=f"2024-01-01T00:{n // 60:02d}:{n % 60:02d}Z",
            resource__instanceDetails__instanceId=f"i-{resource_of[finding_id]:017x}",
        )
        bodies.append(json.dumps({**envelope, "detail": detail}).encode())
    return bodies, dict(counts)


def posts_split(posts: list[Call]) -> tuple[Call, list[Call]]:
    """(the storm card's post, the incident cards' posts)."""
    storms = [p for p in posts if "new GuardDuty incidents" in p.args["text"]]
    assert len(storms) == 1, [p.args["text"] for p in storms]
    return storms[0], [p for p in posts if p is not storms[0]]


def test_storm_posts_one_card_per_incident_and_records_everything(
    guardduty_bot: Callable[..., GuardDutyBot],
) -> None:
    # A storm ends after `window` seconds without a new incident: on a loaded CI machine the
    # fixture's 2 s was once outlasted mid-storm, and its last incidents got their own cards
    # outside the storm card ("38 new GuardDuty incidents" of 40).
    gd = guardduty_bot(update_interval=UPDATE_INTERVAL, storm={"window": STORM_WINDOW})
    gd.bot.slack.rate_limit("chat.postMessage", times=3, retry_after=1)
    bodies, counts = storm()
    statuses: list[int] = []
    lock = threading.Lock()
    work = iter(bodies)

    def sender() -> None:
        while True:
            with lock:
                body = next(work, None)
            if body is None:
                return
            status = gd.post(body).status_code
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=sender) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * len(bodies)
    gd.settle(timeout=30)

    with gd.bot.session() as session:
        recorded = dict(session.execute(select(Finding.finding_id, Finding.count)).all())
        incidents = session.scalars(select(Incident)).all()
        assert all(i.card_ts for i in incidents)
    assert recorded == counts  # every finding, with the highest count sent
    assert len(incidents) == RESOURCES

    slack = gd.bot.slack
    posts = slack.calls_for("chat.postMessage", ok_only=True)
    storm_card, cards = posts_split(posts)
    assert len(cards) == RESOURCES  # one message per incident, and one storm card
    assert len(slack.calls_for("chat.postMessage")) == RESOURCES + 1 + 3  # 429s retried
    assert {p.response["ts"] for p in cards} == {i.card_ts for i in incidents}
    # The storm card, as it ends, names every incident and links each to its own card.
    final = {m["ts"]: m for m in slack.messages("C0INCIDENT")}[storm_card.response["ts"]]
    shown = json.dumps(final["blocks"])
    assert f"{RESOURCES} new GuardDuty incidents" in final["text"]
    for incident in incidents:
        link = f"/archives/C0INCIDENT/p{incident.card_ts.replace('.', '')}|{incident.key}>"
        assert link in shown, incident.key
    updates: dict[str, list[float]] = defaultdict(list)
    for call in slack.calls_for("chat.update", ok_only=True):
        updates[call.args["ts"]].append(call.at)
    card_writes = {p.response["ts"]: p.at for p in cards}
    updates.pop(storm_card.response["ts"])  # refreshed faster: one card for many
    for ts, times in updates.items():
        series = sorted([card_writes[ts], *times])
        gaps = [b - a for a, b in itertools.pairwise(series)]
        assert min(gaps) >= UPDATE_INTERVAL * 0.95, (ts, gaps)
    # Every card ends up showing all its findings' final counts.
    by_ts = {m["ts"]: json.dumps(m["blocks"]) for m in slack.messages("C0INCIDENT")}
    for incident in incidents:
        n = int(incident.resource_id.removeprefix("i-"), 16)
        total = sum(counts[f"storm-{n}-{k}"] for k in range(FINDINGS_PER_RESOURCE))
        assert f"2 findings, seen {total} times" in by_ts[incident.card_ts], incident.key


def ten_new_incidents() -> list[bytes]:
    """Ten findings on ten instances, severities mixed."""
    envelope = load_json("custodian__ec2-duty-event.json")
    severities = [4.0, 8.9, 5.5, 7.2, 4.5, 8.1, 6.0, 7.7, 5.0, 8.4]
    return [
        json.dumps(
            {
                **envelope,
                "detail": ec2_detail(
                    id=f"manners-{n}",
                    severity=severity,
                    resource__instanceDetails__instanceId=f"i-{n:017x}",
                ),
            }
        ).encode()
        for n, severity in enumerate(severities)
    ]


def post_all(gd: GuardDutyBot, bodies: list[bytes]) -> None:
    """Deliver every body at once, one thread each; return when all are answered."""
    threads = [threading.Thread(target=gd.post, args=(body,)) for body in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_storm_under_slacks_own_latency_and_limits(
    guardduty_bot: Callable[..., GuardDutyBot],
) -> None:
    """Slack's manners on (latency, 1 post/s per channel, Tier 3 50/min, 429s past them) and
    the bot's pacing on: the storm card shows every incident within seconds, cards follow
    most severe first, and no 429 goes unhandled."""
    gd = guardduty_bot({"slack": {"pace": True}}, storm={"window": 3.0, "refresh": 1.0})
    slack = gd.bot.slack
    slack.realistic(SlackManners(latency=0.05, jitter=0.02))
    bodies = ten_new_incidents()
    sent = time.time()
    post_all(gd, bodies)
    arrived = time.time()

    def lists_all(call: Call) -> bool:
        text = json.dumps(call.args.get("blocks"))
        return all(f"INC-{n}" in text for n in range(1, len(bodies) + 1))

    shown = slack.wait_for("chat.postMessage", lambda c: "new GuardDuty" in c.args["text"])
    # The storm card goes up as the findings are taken in, not behind other cards: timed
    # from when every delivery was answered, since how fast ten deliveries are recorded is
    # the machine's (bench.storm measures it). Here the card followed the last answer by
    # 0.1-0.2 s, while the answers took 0.1 s alone and 0.9 s beside seven busy processes;
    # CI once measured 3.3 s from the first send to the card.
    assert shown.at - arrived < 3.0, f"intake took {arrived - sent:.2f} s"
    if not lists_all(shown):
        shown = slack.wait_for("chat.update", lambda c: c.ok and lists_all(c), timeout=10)
    # Every incident visible in Slack within the storm target (issue 17: p99 <= 5 s). The
    # storm card goes up as the storm begins, so the last incidents show on its first
    # refresh: 3.5 s after arrival once on a slow, loaded CI machine (refresh 1 s).
    assert shown.at - arrived < 5.0
    gd.settle(timeout=60)

    with gd.bot.session() as session:
        severity_of = dict(
            session.execute(
                select(Incident.card_ts, func.max(Finding.severity))
                .join(Finding, Finding.incident_id == Incident.id)
                .group_by(Incident.id)
            ).all()
        )
    assert all(severity_of)  # every incident has its own card in the end
    posts = slack.calls_for("chat.postMessage", ok_only=True)
    storm_card, cards = posts_split(posts)
    after = [severity_of[c.response["ts"]] for c in cards if c.at > storm_card.at]
    # Behind the storm card, most severe first; the first may be the card that was already
    # under way (its tags being read) when the storm began.
    assert after[1:] == sorted(after[1:], reverse=True)
    assert slack.unhandled_429s() == []
    assert slack.slack_latency_ms() >= 30


def test_the_storm_card_does_not_wait_behind_a_cards_aws_read(
    guardduty_bot: Callable[..., GuardDutyBot],
) -> None:
    """EC2 answers the cards' tag reads only once the storm card is up. The storm card has its
    own worker, so a slow or throttled AWS read (or a card's 429 wait) never holds it back;
    CI once saw moto's cold EC2 backend delay it past 3 s."""
    gd = guardduty_bot({"slack": {"pace": True}}, storm={"window": 3.0, "refresh": 1.0})
    release = threading.Event()
    reads: list[str] = []

    def held(event_name: str, **_: object) -> None:
        reads.append(event_name)
        release.wait(30)

    def clients(service: str, region: str | None) -> object:
        client = boto3.client(service, region_name=region or "us-east-1")
        client.meta.events.register(f"before-call.{service}", held)
        return client

    gd.bot.runtime.options.guardduty_clients = clients
    bodies = ten_new_incidents()
    try:
        gd.post(bodies[0])
        deadline = time.monotonic() + 10
        while not reads and time.monotonic() < deadline:  # the first card reads its tags
            time.sleep(0.01)
        assert reads
        post_all(gd, bodies[1:])
        shown = gd.bot.slack.wait_for(
            "chat.postMessage", lambda c: "new GuardDuty" in c.args["text"], timeout=10
        )
        assert not release.is_set()  # while that read is still held
        assert "new GuardDuty incidents" in shown.args["text"]
    finally:
        release.set()
    gd.settle(timeout=60)
    with gd.bot.session() as session:
        unposted = session.scalar(select(func.count()).where(Incident.card_ts.is_(None)))
    assert unposted == 0
