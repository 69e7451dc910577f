"""Deadlines and reminders: the GDPR regulator clock, stale nudges, the daily digest.

Every reminder is a `Reminder` row; the row is the truth and a scheduler only wakes up to
claim what is due. `claim_due` flips rows pending -> sent in one UPDATE, so of any number of
processes sharing the database exactly one gets each row, and only that one posts it.

Lifecycle of one reminder:
  schedule_reminder (idempotent on dedupe_key)
  -> claim_due (atomic, marks `late` when it came due while no process was up)
  -> prepare_delivery (decides what to say, or cancels it because it no longer applies,
     and schedules follow-ups such as the next overdue alert)
  -> the bot posts it
  -> record_fired (timeline event) | record_failed (retry later, or give up loudly).

Nothing here knows Slack: a `Delivery` says what to post and where, the bot renders it.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Select, event, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.db import clock_of
from storage.models import ContainmentRequest, Incident, Reminder, TimelineEvent
from storage.timeline import append_event

KINDS = ("gdpr", "gdpr_overdue", "approval_expiry", "stale", "digest", "abuse", "followup")
GDPR_KINDS = ("gdpr", "gdpr_overdue")
LIVE_STATUSES = ("open", "contained")
SCHEDULER = "scheduler"
# A reminder claimed this long after it was due counts as late even with a process running
# (a hung process, or every replica down). Start-up catch-up marks late explicitly.
LATE_AFTER = dt.timedelta(seconds=60)
# A claimed reminder not posted after this long was claimed by a process that died.
STALLED_AFTER = dt.timedelta(minutes=5)
# Transient posting failures are retried with this back-off, then given up (and recorded).
RETRY_BACKOFF = (5, 30, 120, 600)


# -- policy -------------------------------------------------------------------------------


class DeadlineOptions(Protocol):
    """The `deadlines:` configuration section (bot.settings.DeadlinesConfig)."""

    gdpr_hours: float
    reminder_hours_before: list[float]
    overdue_every_hours: float
    stale_after_hours: float
    digest_time: str
    timezone: str
    personal_data_tags: dict[str, list[str]]


@dataclass(frozen=True)
class DeadlinePolicy:
    gdpr_hours: float = 72
    reminder_hours_before: tuple[float, ...] = (48, 24, 6, 1)
    overdue_every_hours: float = 12
    stale_after_hours: float = 24
    digest_time: str = "09:00"
    timezone: str = "UTC"
    personal_data_tags: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {"DataClassification": ("PII", "Confidential")}
    )

    @classmethod
    def from_options(cls, options: DeadlineOptions) -> DeadlinePolicy:
        return cls(
            gdpr_hours=float(options.gdpr_hours),
            reminder_hours_before=tuple(
                sorted((float(h) for h in options.reminder_hours_before), reverse=True)
            ),
            overdue_every_hours=float(options.overdue_every_hours),
            stale_after_hours=float(options.stale_after_hours),
            digest_time=options.digest_time,
            timezone=options.timezone,
            personal_data_tags={k: tuple(v) for k, v in (options.personal_data_tags or {}).items()},
        )

    @property
    def gdpr(self) -> dt.timedelta:
        return dt.timedelta(hours=self.gdpr_hours)

    @property
    def overdue_every(self) -> dt.timedelta:
        return dt.timedelta(hours=self.overdue_every_hours)

    @property
    def stale_after(self) -> dt.timedelta:
        return dt.timedelta(hours=self.stale_after_hours)


_policy_lock = threading.Lock()
_policy = DeadlinePolicy()


def policy_of(settings: Any = None) -> DeadlinePolicy:
    """A DeadlinePolicy from Settings, AppConfig, a deadlines section, a policy, or None.

    None means the process-wide policy set by `configure` (defaults until the bot starts),
    which is what callers without settings at hand (`mark_personal_data`) use.
    """
    if settings is None:
        return _policy
    if isinstance(settings, DeadlinePolicy):
        return settings
    config = getattr(settings, "config", settings)
    options = getattr(config, "deadlines", config)
    return DeadlinePolicy.from_options(options)


def configure(settings: Any) -> DeadlinePolicy:
    """Set the process-wide policy (the bot does this at start); returns the previous one."""
    global _policy
    with _policy_lock:
        previous, _policy = _policy, policy_of(settings)
    return previous


# -- waking the scheduler after commit ----------------------------------------------------

ScheduleListener = Callable[[dt.datetime], None]
_listeners: list[ScheduleListener] = []
_INFO_KEY = "deadlines.earliest_due"


def add_schedule_listener(fn: ScheduleListener) -> None:
    """Call `fn(earliest_due_at)` after any transaction that scheduled reminders commits."""
    _listeners.append(fn)


def remove_schedule_listener(fn: ScheduleListener) -> None:
    if fn in _listeners:
        _listeners.remove(fn)


def _note_scheduled(session: Session, due_at: dt.datetime) -> None:
    current = session.info.get(_INFO_KEY)
    if current is None or due_at < current:
        session.info[_INFO_KEY] = due_at


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    due = session.info.pop(_INFO_KEY, None)
    if due is None:
        return
    for fn in list(_listeners):
        try:
            fn(due)
        except Exception:  # a listener must never break the caller's commit
            import logging

            logging.getLogger(__name__).exception("schedule listener failed")


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_INFO_KEY, None)


# -- scheduling ---------------------------------------------------------------------------


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _insert(session: Session) -> Any:
    return postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert


def schedule_reminder(
    *,
    session: Session,
    incident: Incident | None,
    kind: str,
    due_at: dt.datetime,
    dedupe_key: str | None,
    message: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> Reminder:
    """Add a pending reminder; a second call with the same dedupe_key returns the first row.

    Safe against concurrent callers on PostgreSQL (INSERT ... ON CONFLICT DO NOTHING), so two
    replicas scheduling the same deadline end up with one row.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown reminder kind {kind!r}")
    if due_at.tzinfo is None:
        raise ValueError("due_at must be an aware datetime")
    if incident is not None and incident.id is None:
        session.flush()
    values = {
        "incident_id": incident.id if incident is not None else None,
        "kind": kind,
        "due_at": due_at,
        "status": "pending",
        "dedupe_key": dedupe_key,
        "late": False,
        "message": message,
        "payload": dict(payload or {}),
        "created_at": clock_of(session).now(),
    }
    stmt = _insert(session)(Reminder).values(**values)
    if dedupe_key is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["dedupe_key"])
    new_id = session.execute(stmt.returning(Reminder.id)).scalar()
    if new_id is not None:
        _note_scheduled(session, due_at)
        return session.get(Reminder, new_id)  # type: ignore[return-value]
    return session.scalars(select(Reminder).where(Reminder.dedupe_key == dedupe_key)).one()


def cancel_reminders(
    *,
    session: Session,
    incident: Incident,
    kinds: Sequence[str],
    actor: str,
    reason: str,
) -> int:
    """Cancel an incident's pending reminders of `kinds`; a timeline event says how many."""
    result = session.execute(
        update(Reminder)
        .where(
            Reminder.incident_id == incident.id,
            Reminder.kind.in_(kinds),
            Reminder.status == "pending",
        )
        .values(status="cancelled")
        .execution_options(synchronize_session=False)
    )
    count = result.rowcount or 0  # type: ignore[attr-defined]
    if count:
        append_event(
            session=session,
            incident=incident,
            actor=actor,
            kind="reminders.cancelled",
            summary=f"Cancelled {count} pending reminder(s): {reason}",
            details={"kinds": list(kinds), "count": count, "reason": reason},
        )
    return count


# -- the regulator clock ------------------------------------------------------------------


@dataclass(frozen=True)
class ClockStatus:
    state: str  # none | running | overdue | notified
    deadline: dt.datetime | None = None
    remaining: dt.timedelta | None = None  # negative when overdue


def regulator_clock(incident: Incident, *, now: dt.datetime, policy: Any = None) -> ClockStatus:
    """Where an incident's regulator clock stands (for cards, status and reminders)."""
    if not incident.personal_data or incident.aware_at is None:
        return ClockStatus("none")
    deadline = incident.aware_at + policy_of(policy).gdpr
    if incident.notified_at is not None:
        return ClockStatus("notified", deadline, deadline - incident.notified_at)
    remaining = deadline - now
    state = "running" if remaining.total_seconds() > 0 else "overdue"
    return ClockStatus(state, deadline, remaining)


def format_duration(delta: dt.timedelta) -> str:
    """`2 d 3 h`, `5 h 12 m`, `4 m 10 s`, `36 s` (sign dropped; callers say overdue)."""
    secs = int(abs(delta.total_seconds()))
    days, rest = divmod(secs, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} m"
    if minutes:
        return f"{minutes} m {seconds} s"
    return f"{seconds} s"


def utc_text(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def time_left_text(incident: Incident, *, now: dt.datetime, policy: Any = None) -> str | None:
    """One line for the card: time left, overdue by, or notified; None without a clock."""
    clock = regulator_clock(incident, now=now, policy=policy)
    if clock.state == "none" or clock.deadline is None or clock.remaining is None:
        return None
    if clock.state == "notified":
        return (
            f"Regulator notified {utc_text(incident.notified_at)}"  # type: ignore[arg-type]
            f" ({incident.notified_reference or 'no reference'})"
        )
    if clock.state == "overdue":
        return (
            f"Regulator notice OVERDUE by {format_duration(clock.remaining)} "
            f"(was due {utc_text(clock.deadline)})"
        )
    return (
        f"Regulator notice due in {format_duration(clock.remaining)} "
        f"(by {utc_text(clock.deadline)})"
    )


def running_clock_keys(*, session: Session) -> list[str]:
    """Keys of live incidents with a running regulator clock and a card to keep current."""
    numbers = session.scalars(
        select(Incident.number)
        .where(
            Incident.personal_data.is_(True),
            Incident.notified_at.is_(None),
            Incident.status.in_(LIVE_STATUSES),
            Incident.card_ts.is_not(None),
        )
        .order_by(Incident.number)
    ).all()
    return [f"INC-{n}" for n in numbers]


def _hours_key(hours: float) -> str:
    return f"{hours:g}"


def schedule_gdpr_clock(
    *,
    session: Session,
    incident: Incident,
    policy: Any = None,
    now: dt.datetime | None = None,
) -> list[Reminder]:
    """The reminders before the deadline and the deadline itself (idempotent).

    A reminder whose time has already passed when the clock starts (aware_at back-dated) is
    not scheduled: "48 h left" is wrong when 10 are left. The deadline always is.
    """
    if not incident.personal_data or incident.aware_at is None or incident.notified_at:
        return []
    pol = policy_of(policy)
    now = now or clock_of(session).now()
    deadline = incident.aware_at + pol.gdpr
    rows = []
    for hours in pol.reminder_hours_before:
        due = deadline - dt.timedelta(hours=hours)
        if hours >= pol.gdpr_hours or due <= now:
            continue
        rows.append(
            schedule_reminder(
                session=session,
                incident=incident,
                kind="gdpr",
                due_at=due,
                dedupe_key=f"gdpr:{incident.id}:before:{_hours_key(hours)}",
                message=f"{_hours_key(hours)} h before the regulator deadline",
                payload={"stage": "before", "hours_before": hours},
            )
        )
    rows.append(
        schedule_reminder(
            session=session,
            incident=incident,
            kind="gdpr",
            due_at=deadline,
            dedupe_key=f"gdpr:{incident.id}:deadline",
            message="regulator deadline",
            payload={"stage": "deadline"},
        )
    )
    return rows


def on_personal_data(*, session: Session, incident: Incident) -> None:
    """Hook for commands.incidents.mark_personal_data: the clock started, schedule it."""
    schedule_gdpr_clock(session=session, incident=incident)


def on_notified(*, session: Session, incident: Incident, actor: str) -> None:
    """Hook for commands.incidents.record_notified: no more GDPR reminders or alerts."""
    cancel_reminders(
        session=session,
        incident=incident,
        kinds=GDPR_KINDS,
        actor=actor,
        reason="regulator notified",
    )


def _tag_pairs(tags: Any) -> list[tuple[str, str]]:
    """Tags as (key, value) from a dict, AWS `[{Key, Value}]` or GuardDuty `[{key, value}]`."""
    if not tags:
        return []
    if isinstance(tags, Mapping):
        return [(str(k), str(v)) for k, v in tags.items() if v is not None]
    pairs = []
    for tag in tags:
        if isinstance(tag, Mapping):
            key = tag.get("Key", tag.get("key"))
            value = tag.get("Value", tag.get("value"))
            if key is not None and value is not None:
                pairs.append((str(key), str(value)))
        elif isinstance(tag, tuple | list) and len(tag) == 2:
            pairs.append((str(tag[0]), str(tag[1])))
    return pairs


def personal_data_tag(tags: Any, *, policy: Any = None) -> tuple[str, str] | None:
    """The first tag that marks personal data under the policy, matched case-insensitively.

    Case-insensitive on purpose: `dataclassification=pii` missing the clock costs far more
    than a false start, which `/incident notified` or a note can settle.
    """
    wanted = {
        k.strip().lower(): {v.strip().lower() for v in values}
        for k, values in policy_of(policy).personal_data_tags.items()
    }
    for key, value in _tag_pairs(tags):
        values = wanted.get(key.strip().lower())
        if values and value.strip().lower() in values:
            return key, value
    return None


def start_clock_from_tags(
    *,
    session: Session,
    incident: Incident,
    tags: Any,
    settings: Any = None,
    actor: str = "system",
    resource_id: str | None = None,
    aware_at: dt.datetime | None = None,
) -> bool:
    """Start the regulator clock when a resource's tags say it holds personal data.

    Returns True when this call started it (False: no such tag, or already running).
    """
    from commands.incidents import mark_personal_data  # incidents calls back into us

    match = personal_data_tag(tags, policy=settings)
    if match is None:
        return False
    where = f" on {resource_id}" if resource_id else ""
    started = mark_personal_data(
        session=session,
        incident=incident,
        actor=actor,
        aware_at=aware_at,
        reason=f"resource tagged {match[0]}={match[1]}{where}",
        schedule=False,
    )
    if started:
        schedule_gdpr_clock(session=session, incident=incident, policy=settings)
    return started


def mrkdwn_escape(text: str) -> str:
    """User text in a Delivery (mrkdwn): Slack decodes exactly these three entities, so a
    title like `<!channel>` shows literally instead of pinging everyone in the digest."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mention(user_id: str | None) -> str:
    if user_id and user_id[:1] in ("U", "W") and user_id.isalnum():
        return f"<@{user_id}>"
    return mrkdwn_escape(user_id or "nobody")


# -- stale incidents and the digest -------------------------------------------------------


def _last_activity_query() -> Select[Any]:
    """Per incident, the newest timeline event not written by the scheduler itself."""
    return (
        select(TimelineEvent.incident_id, func.max(TimelineEvent.occurred_at).label("last"))
        .where(TimelineEvent.actor != SCHEDULER)
        .group_by(TimelineEvent.incident_id)
    )


def _aware(ts: dt.datetime | None) -> dt.datetime | None:
    # Aggregates bypass the column type on SQLite and come back naive (stored as UTC).
    if ts is None:
        return None
    if isinstance(ts, str):
        ts = dt.datetime.fromisoformat(ts)
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def last_activity(*, session: Session, incident: Incident) -> dt.datetime:
    last = session.scalar(
        select(func.max(TimelineEvent.occurred_at)).where(
            TimelineEvent.incident_id == incident.id, TimelineEvent.actor != SCHEDULER
        )
    )
    return _aware(last) or incident.created_at


def _stale_key(incident_id: int, due_at: dt.datetime) -> str:
    return f"stale:{incident_id}:{int(due_at.timestamp())}"


def ensure_stale_checks(
    *,
    session: Session,
    now: dt.datetime | None = None,
    policy: Any = None,
    limit: int | None = None,
) -> int:
    """Give live, non-drill incidents without one a pending stale check; returns how many.

    One multi-row INSERT per call; `limit` bounds the transaction so a sweep over thousands
    of incidents never holds SQLite's write lock long enough to delay a due reminder.
    """
    pol = policy_of(policy)
    now = now or clock_of(session).now()
    pending = select(Reminder.incident_id).where(
        Reminder.kind == "stale", Reminder.status == "pending", Reminder.incident_id.is_not(None)
    )
    activity = _last_activity_query().subquery()
    stmt = (
        select(Incident.id, Incident.created_at, activity.c.last)
        .outerjoin(activity, activity.c.incident_id == Incident.id)
        .where(
            Incident.status.in_(LIVE_STATUSES),
            Incident.is_drill.is_(False),
            Incident.id.not_in(pending),
        )
        .order_by(Incident.id)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = session.execute(stmt).all()
    if not rows:
        return 0
    created = clock_of(session).now()
    values = []
    for incident_id, created_at, last in rows:
        due = max((_aware(last) or _aware(created_at)) + pol.stale_after, now)  # type: ignore[operator]
        values.append(
            {
                "incident_id": incident_id,
                "kind": "stale",
                "due_at": due,
                "status": "pending",
                "dedupe_key": _stale_key(incident_id, due),
                "late": False,
                "message": None,
                "payload": {},
                "created_at": created,
            }
        )
    session.execute(
        _insert(session)(Reminder).on_conflict_do_nothing(index_elements=["dedupe_key"]),
        values,
    )
    _note_scheduled(session, min(v["due_at"] for v in values))
    return len(rows)


def next_digest_at(*, now: dt.datetime, policy: Any = None) -> dt.datetime:
    """The next digest_time in the configured timezone, as UTC (DST handled by zoneinfo)."""
    pol = policy_of(policy)
    tz = ZoneInfo(pol.timezone)
    hour, minute = (int(p) for p in pol.digest_time.split(":"))
    local_now = now.astimezone(tz)
    day = local_now.date()
    for _ in range(3):
        candidate = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=tz)
        # Round-trip through UTC so a time skipped by a DST jump lands on a real instant.
        candidate_utc = candidate.astimezone(dt.UTC)
        if candidate_utc > now:
            return candidate_utc
        day += dt.timedelta(days=1)
    raise AssertionError("unreachable: a digest time exists within three days")


def _digest_key(due_at: dt.datetime, policy: DeadlinePolicy) -> str:
    return f"digest:{due_at.astimezone(ZoneInfo(policy.timezone)).date().isoformat()}"


def ensure_digest(
    *, session: Session, now: dt.datetime | None = None, policy: Any = None
) -> Reminder:
    """Make sure a digest is pending (the next one, unless one is already waiting)."""
    pol = policy_of(policy)
    now = now or clock_of(session).now()
    existing = session.scalars(
        select(Reminder)
        .where(Reminder.kind == "digest", Reminder.status == "pending")
        .order_by(Reminder.due_at)
        .limit(1)
    ).first()
    if existing is not None:
        return existing
    due = next_digest_at(now=now, policy=pol)
    return schedule_reminder(
        session=session,
        incident=None,
        kind="digest",
        due_at=due,
        dedupe_key=_digest_key(due, pol),
        payload={},
    )


@dataclass(frozen=True)
class DigestLine:
    incident_id: int
    key: str
    text: str


@dataclass(frozen=True)
class Digest:
    incidents: list[DigestLine]
    approvals: list[str]
    deadlines: list[str]

    def render(self, *, now: dt.datetime, policy: DeadlinePolicy) -> str:
        local = now.astimezone(ZoneInfo(policy.timezone))
        out = [f"*Daily incident digest* · {local:%A %d %B %Y} ({policy.timezone})"]
        out.append(f"\n*Open incidents ({len(self.incidents)})*")
        out += [f"• {line.text}" for line in self.incidents] or ["• none"]
        out.append(f"\n*Pending approvals ({len(self.approvals)})*")
        out += [f"• {a}" for a in self.approvals] or ["• none"]
        out.append(f"\n*Deadlines in the next 24 h ({len(self.deadlines)})*")
        out += [f"• {d}" for d in self.deadlines] or ["• none"]
        return "\n".join(out)


def build_digest(*, session: Session, now: dt.datetime, policy: Any = None) -> Digest:
    """Open incidents, pending approvals and deadlines due within 24 h; drills left out."""
    pol = policy_of(policy)
    horizon = now + dt.timedelta(hours=24)
    incidents = session.scalars(
        select(Incident)
        .where(Incident.status.in_(LIVE_STATUSES), Incident.is_drill.is_(False))
        .order_by(Incident.number)
    ).all()
    lines = [
        DigestLine(
            i.id,
            i.key,
            f"{i.key} [{i.severity}/{i.status}] {mrkdwn_escape(i.title)}"
            + f" · owner {_mention(i.owner)}",
        )
        for i in incidents
    ]
    requests = session.execute(
        select(ContainmentRequest, Incident)
        .join(Incident, Incident.id == ContainmentRequest.incident_id)
        .where(ContainmentRequest.status == "pending", Incident.is_drill.is_(False))
        .order_by(ContainmentRequest.requested_at)
    ).all()
    approvals = []
    deadlines: list[tuple[dt.datetime, str]] = []
    for req, inc in requests:
        expires = _aware(req.expires_at)
        tail = f", expires {utc_text(expires)}" if expires else ""
        approvals.append(
            f"{inc.key}: {req.kind} {mrkdwn_escape(req.target_id)} requested by "
            f"{_mention(req.requested_by)}{tail}"
        )
        if expires and now < expires <= horizon:
            deadlines.append(
                (expires, f"{inc.key}: approval of {mrkdwn_escape(req.target_id)} expires")
            )
    for inc in incidents:
        clock = regulator_clock(inc, now=now, policy=pol)
        if clock.deadline and clock.state in ("running", "overdue") and clock.deadline <= horizon:
            what = "OVERDUE" if clock.state == "overdue" else "due"
            deadlines.append((clock.deadline, f"{inc.key}: regulator notice {what}"))
    others = session.execute(
        select(Reminder, Incident)
        .join(Incident, Incident.id == Reminder.incident_id)
        .where(
            Reminder.kind.in_(("followup", "abuse")),
            Reminder.status == "pending",
            Reminder.due_at <= horizon,
            Incident.is_drill.is_(False),
        )
    ).all()
    for rem, inc in others:
        deadlines.append(
            (rem.due_at, f"{inc.key}: {rem.kind} {mrkdwn_escape(rem.message or '')}".rstrip())
        )
    deadlines.sort(key=lambda pair: pair[0])
    return Digest(
        incidents=lines,
        approvals=approvals,
        deadlines=[f"{utc_text(at)} · {text}" for at, text in deadlines],
    )


# -- claiming and delivering --------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    id: int
    incident_id: int | None
    kind: str
    due_at: dt.datetime
    late: bool
    claimed_at: dt.datetime


def claim_due(
    *,
    session: Session,
    now: dt.datetime,
    worker_id: str,
    limit: int = 50,
    late_before: dt.datetime | None = None,
) -> list[Claim]:
    """Atomically take up to `limit` due reminders: pending -> sent, owned by `worker_id`.

    One UPDATE ... WHERE status = 'pending' RETURNING: a row another process took first no
    longer matches, so each row goes to exactly one claimer. On PostgreSQL the candidate rows
    are locked with SKIP LOCKED so replicas share the work instead of queueing on each other.
    Rows due before `late_before` (default: now - LATE_AFTER) are marked late.
    """
    cut = late_before if late_before is not None else now - LATE_AFTER
    candidates = (
        select(Reminder.id)
        .where(Reminder.status == "pending", Reminder.due_at <= now)
        .order_by(Reminder.due_at, Reminder.id)
        .limit(limit)
    )
    if _dialect(session) == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    stmt = (
        update(Reminder)
        .where(Reminder.id.in_(candidates.scalar_subquery()), Reminder.status == "pending")
        .values(
            status="sent",
            claimed_by=worker_id,
            sent_at=now,
            late=or_(Reminder.late, Reminder.due_at < cut),
        )
        .returning(Reminder.id, Reminder.incident_id, Reminder.kind, Reminder.due_at, Reminder.late)
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(stmt).all()
    claims = [Claim(r[0], r[1], r[2], _aware(r[3]), bool(r[4]), now) for r in rows]  # type: ignore[arg-type]
    return sorted(claims, key=lambda c: (c.due_at, c.id))


def _delivered_or_closed(payload: Mapping[str, Any] | None) -> bool:
    payload = payload or {}
    return bool(payload.get("ts") or payload.get("posted_at") or payload.get("failed"))


def recover_stalled(
    *,
    session: Session,
    now: dt.datetime,
    worker_id: str,
    lease: dt.timedelta = STALLED_AFTER,
    horizon: dt.timedelta = dt.timedelta(days=2),
) -> list[Claim]:
    """Take over reminders whose claimer died between claiming and posting.

    A claimed row records its post (`payload.ts`) right after Slack accepts it; a row
    claimed longer than `lease` ago without one belonged to a process that was killed
    mid-delivery. Each is re-claimed with a compare-and-swap on (claimed_by, sent_at), so one
    process takes it over, and it is marked `recovered` (the post says it may repeat: the
    dead process may have reached Slack just before it died). `lease` must exceed the
    longest delivery, Slack's rate-limit retries included.
    """
    rows = session.execute(
        select(Reminder.id, Reminder.claimed_by, Reminder.sent_at, Reminder.payload).where(
            Reminder.status == "sent",
            Reminder.sent_at < now - lease,
            Reminder.sent_at > now - horizon,
        )
    ).all()
    claims: list[Claim] = []
    for rid, owner, sent_at, payload in rows:
        if _delivered_or_closed(payload):
            continue
        taken = session.execute(
            update(Reminder)
            .where(
                Reminder.id == rid,
                Reminder.status == "sent",
                Reminder.claimed_by == owner,
                Reminder.sent_at == sent_at,
            )
            .values(
                claimed_by=worker_id,
                sent_at=now,
                late=True,
                payload={**(payload or {}), "recovered_from": owner},
            )
            .returning(Reminder.id, Reminder.incident_id, Reminder.kind, Reminder.due_at)
            .execution_options(synchronize_session=False)
        ).first()
        if taken is not None:
            claims.append(Claim(taken[0], taken[1], taken[2], _aware(taken[3]), True, now))  # type: ignore[arg-type]
    return claims


def mark_late(*, session: Session, before: dt.datetime) -> int:
    """Flag pending rows due before `before` (start-up: they came due while we were down)."""
    result = session.execute(
        update(Reminder)
        .where(Reminder.status == "pending", Reminder.due_at < before, Reminder.late.is_(False))
        .values(late=True)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


def next_due(*, session: Session) -> dt.datetime | None:
    """The earliest pending due time: what the scheduler's one timer is armed for."""
    return _aware(
        session.scalar(select(func.min(Reminder.due_at)).where(Reminder.status == "pending"))
    )


@dataclass(frozen=True)
class Delivery:
    """What to post for one claimed reminder; the bot adds mentions and posts it."""

    reminder_id: int
    kind: str
    text: str  # mrkdwn; user-supplied parts already escaped
    incident_id: int | None = None
    incident_key: str | None = None
    channel: str | None = None  # None: the configured incident channel
    thread_ts: str | None = None
    owner: str | None = None
    mention_contacts: bool = True
    late: bool = False
    due_at: dt.datetime | None = None
    # Incidents whose timelines record this firing (the digest lists several).
    timeline_incident_ids: tuple[int, ...] = ()
    refresh_card: bool = False


KindHandler = Callable[..., "Delivery | None"]
_kind_handlers: dict[str, KindHandler] = {}


def register_kind(kind: str) -> Callable[[KindHandler], KindHandler]:
    """Let another feature decide what its reminders say (e.g. approvals' expiry).

    The handler is called as `fn(session=, reminder=, incident=, now=, policy=, base=)` in the
    delivery transaction, with `base` the default Delivery; it returns a Delivery, or None to
    post nothing (the reminder is then recorded as cancelled).
    """

    def decorate(fn: KindHandler) -> KindHandler:
        if kind not in KINDS:
            raise ValueError(f"unknown reminder kind {kind!r}")
        _kind_handlers[kind] = fn
        return fn

    return decorate


def _cancel_claimed(session: Session, reminder: Reminder, reason: str) -> None:
    """A claimed reminder that no longer applies: recorded as cancelled, nothing posted."""
    reminder.status = "cancelled"
    reminder.payload = {**(reminder.payload or {}), "cancelled": reason}


def _late_note(reminder: Reminder, now: dt.datetime) -> str:
    if (reminder.payload or {}).get("recovered_from"):
        return (
            f" _(late: due {utc_text(reminder.due_at)}; the bot restarted while posting this, "
            "so it may repeat)_"
        )
    if not reminder.late:
        return ""
    ago = format_duration(now - reminder.due_at)
    return f" _(late: was due {utc_text(reminder.due_at)}, {ago} ago)_"


def prepare_delivery(
    *, session: Session, claim: Claim, now: dt.datetime, policy: Any = None
) -> Delivery | None:
    """Decide what a claimed reminder says; None when it no longer applies.

    Runs in its own transaction after the claim committed. Follow-ups (the next overdue
    alert, the next stale check, tomorrow's digest) are scheduled here, in the same
    transaction, so a crash cannot lose the chain.
    """
    pol = policy_of(policy)
    reminder = session.get(Reminder, claim.id, populate_existing=True)
    if reminder is None or reminder.status != "sent":
        return None
    incident = session.get(Incident, reminder.incident_id) if reminder.incident_id else None
    base = Delivery(
        reminder_id=reminder.id,
        kind=reminder.kind,
        text=mrkdwn_escape(reminder.message or f"Reminder: {reminder.kind}"),
        incident_id=incident.id if incident else None,
        incident_key=incident.key if incident else None,
        channel=incident.channel_id if incident else None,
        thread_ts=incident.thread_ts if incident else None,
        owner=incident.owner if incident else None,
        # A drill reminds the responders rehearsing it, never the real contacts.
        mention_contacts=not (incident and incident.is_drill),
        late=reminder.late,
        due_at=reminder.due_at,
        timeline_incident_ids=(incident.id,) if incident else (),
    )
    late = _late_note(reminder, now)
    handler = _kind_handlers.get(reminder.kind)
    if handler is not None:
        delivery = handler(
            session=session, reminder=reminder, incident=incident, now=now, policy=pol, base=base
        )
        if delivery is None:
            _cancel_claimed(session, reminder, "handler declined")
        return delivery
    if reminder.kind in GDPR_KINDS:
        return _gdpr_delivery(session, reminder, incident, now, pol, base, late)
    if reminder.kind == "stale":
        return _stale_delivery(session, reminder, incident, now, pol, base, late)
    if reminder.kind == "digest":
        return _digest_delivery(session, reminder, now, pol, base, late)
    if incident is not None and incident.status == "closed":
        _cancel_claimed(session, reminder, "incident closed")
        return None
    key = f"{incident.key}: " if incident else ""
    return replace(base, text=f"⏰ {key}{base.text}{late}")


def _gdpr_delivery(
    session: Session,
    reminder: Reminder,
    incident: Incident | None,
    now: dt.datetime,
    pol: DeadlinePolicy,
    base: Delivery,
    late: str,
) -> Delivery | None:
    if incident is None or not incident.personal_data or incident.aware_at is None:
        _cancel_claimed(session, reminder, "no regulator clock")
        return None
    if incident.notified_at is not None:
        _cancel_claimed(session, reminder, "regulator already notified")
        return None
    deadline = incident.aware_at + pol.gdpr
    how = f"Record it with `/incident notified {incident.key} <reference>` once it is sent."
    stage = (reminder.payload or {}).get("stage")
    if reminder.kind == "gdpr" and stage == "before" and now >= deadline:
        # Posted so late the deadline passed: the deadline alert says it, once.
        _cancel_claimed(session, reminder, "superseded by the deadline alert")
        return None
    if (
        reminder.kind == "gdpr"
        and stage == "before"
        and _later_reminder_due(session, reminder, now)
    ):
        # Several countdowns came due during an outage: the latest one says it, once.
        _cancel_claimed(session, reminder, "superseded by a later reminder")
        return None
    if reminder.kind == "gdpr" and stage == "before":
        text = (
            f"⏰ *GDPR*: the regulator notice for *{incident.key}* is due in "
            f"*{format_duration(deadline - now)}* (by {utc_text(deadline)}). {how}"
        )
    else:
        n = int((reminder.payload or {}).get("n", 0))
        _schedule_next_overdue(session, incident, n + 1, now, pol)
        if reminder.kind == "gdpr" and stage == "deadline":
            lead = f"🚨 *GDPR deadline reached* for *{incident.key}*"
        else:
            lead = f"🚨 *GDPR notice OVERDUE* for *{incident.key}*"
        text = (
            f"{lead}: the regulator notice was due {utc_text(deadline)} "
            f"({format_duration(now - deadline)} ago). {how}"
        )
    return replace(base, text=text + late, refresh_card=True)


def _later_reminder_due(session: Session, reminder: Reminder, now: dt.datetime) -> bool:
    """Another of the incident's GDPR reminders is due after this one but already due."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Reminder)
            .where(
                Reminder.incident_id == reminder.incident_id,
                Reminder.kind == "gdpr",
                Reminder.id != reminder.id,
                Reminder.status != "cancelled",
                Reminder.due_at > reminder.due_at,
                Reminder.due_at <= now,
            )
        )
        or 0
    ) > 0


def _schedule_next_overdue(
    session: Session, incident: Incident, n: int, now: dt.datetime, pol: DeadlinePolicy
) -> None:
    """Overdue alerts repeat every overdue_every_hours after the deadline until notified.

    Periods that passed while the bot was down are skipped (the late alert just posted
    covers them), so a restart never bursts out a backlog of identical alerts.
    """
    deadline = incident.aware_at + pol.gdpr  # type: ignore[operator]
    every = pol.overdue_every.total_seconds()
    n = max(n, int((now - deadline).total_seconds() // every) + 1)
    schedule_reminder(
        session=session,
        incident=incident,
        kind="gdpr_overdue",
        due_at=deadline + pol.overdue_every * n,
        dedupe_key=f"gdpr_overdue:{incident.id}:{n}",
        message=f"regulator notice overdue (alert {n})",
        payload={"n": n},
    )


def _stale_delivery(
    session: Session,
    reminder: Reminder,
    incident: Incident | None,
    now: dt.datetime,
    pol: DeadlinePolicy,
    base: Delivery,
    late: str,
) -> Delivery | None:
    if incident is None or incident.status not in LIVE_STATUSES or incident.is_drill:
        _cancel_claimed(session, reminder, "incident no longer live")
        return None
    # Another replica's sweep may have raced ours: one nudge per incident at a time.
    session.execute(
        update(Reminder)
        .where(
            Reminder.incident_id == incident.id,
            Reminder.kind == "stale",
            Reminder.status == "pending",
        )
        .values(status="cancelled")
        .execution_options(synchronize_session=False)
    )
    last = last_activity(session=session, incident=incident)
    quiet_until = last + pol.stale_after
    if quiet_until > now + dt.timedelta(seconds=1):
        # Someone worked on it since this check was scheduled: look again later.
        _cancel_claimed(session, reminder, "activity since scheduled")
        schedule_reminder(
            session=session,
            incident=incident,
            kind="stale",
            due_at=quiet_until,
            dedupe_key=_stale_key(incident.id, quiet_until),
        )
        return None
    nxt = now + pol.stale_after
    schedule_reminder(
        session=session,
        incident=incident,
        kind="stale",
        due_at=nxt,
        dedupe_key=_stale_key(incident.id, nxt),
    )
    text = (
        f"💤 *{incident.key}* has had no activity for {format_duration(now - last)} "
        f"(since {utc_text(last)}). Add a note, change its status, or resolve it."
    )
    return replace(base, text=text + late)


def _digest_delivery(
    session: Session,
    reminder: Reminder,
    now: dt.datetime,
    pol: DeadlinePolicy,
    base: Delivery,
    late: str,
) -> Delivery:
    digest = build_digest(session=session, now=now, policy=pol)
    due = next_digest_at(now=max(now, reminder.due_at), policy=pol)
    schedule_reminder(
        session=session,
        incident=None,
        kind="digest",
        due_at=due,
        dedupe_key=_digest_key(due, pol),
    )
    return replace(
        base,
        text=digest.render(now=now, policy=pol) + late,
        channel=None,
        thread_ts=None,
        owner=None,
        mention_contacts=False,
        timeline_incident_ids=tuple(line.incident_id for line in digest.incidents),
    )


def record_fired(
    *,
    session: Session,
    delivery: Delivery,
    now: dt.datetime,
    channel: str | None,
    ts: str | None,
) -> None:
    """The reminder was posted: keep where, and write it to the incident timeline(s)."""
    reminder = session.get(Reminder, delivery.reminder_id, populate_existing=True)
    if reminder is None:
        return
    lateness = (now - reminder.due_at).total_seconds()
    reminder.payload = {
        **(reminder.payload or {}),
        "posted_at": now.isoformat(),
        "channel": channel,
        "ts": ts,
        "lateness_s": round(lateness, 3),
    }
    details = {
        "reminder_id": reminder.id,
        "reminder_kind": reminder.kind,
        "due_at": reminder.due_at.isoformat(),
        "late": reminder.late,
        "lateness_s": round(lateness, 3),
        "channel": channel,
        "ts": ts,
    }
    ids: Iterable[int] = delivery.timeline_incident_ids
    incidents = session.scalars(select(Incident).where(Incident.id.in_(list(ids)))).all()
    for incident in incidents:
        if reminder.kind == "digest":
            summary = "Listed in the daily digest"
        else:
            summary = ("Late reminder posted: " if reminder.late else "Reminder posted: ") + (
                delivery.text.split("\n", 1)[0][:300]
            )
        append_event(
            session=session,
            incident=incident,
            actor=SCHEDULER,
            kind=f"reminder.{reminder.kind}",
            summary=summary,
            details=details,
        )


def record_failed(
    *,
    session: Session,
    reminder_id: int,
    now: dt.datetime,
    error: str,
    retry: bool,
) -> dt.datetime | None:
    """Posting failed. Transient: back to pending with back-off (returns the new due time).

    Permanent, or out of retries: stays claimed, marked failed, and the incident's timeline
    says it was not delivered, so the miss is never silent.
    """
    reminder = session.get(Reminder, reminder_id, populate_existing=True)
    if reminder is None:
        return None
    payload = dict(reminder.payload or {})
    attempts = int(payload.get("attempts", 0)) + 1
    payload.update(attempts=attempts, last_error=error)
    if retry and attempts <= len(RETRY_BACKOFF):
        due = now + dt.timedelta(seconds=RETRY_BACKOFF[attempts - 1])
        reminder.payload = payload
        reminder.status = "pending"
        reminder.claimed_by = None
        reminder.sent_at = None
        reminder.due_at = due
        _note_scheduled(session, due)
        return due
    payload["failed"] = True
    reminder.payload = payload
    if reminder.incident_id is not None:
        incident = session.get(Incident, reminder.incident_id)
        if incident is not None:
            append_event(
                session=session,
                incident=incident,
                actor=SCHEDULER,
                kind="reminder.failed",
                summary=f"Could not post the {reminder.kind} reminder: {error}",
                details={"reminder_id": reminder.id, "error": error, "attempts": attempts},
            )
    return None
