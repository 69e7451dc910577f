"""Typed SQLAlchemy 2 models. The timeline is append-only; see storage/timeline.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from storage.clock import column_now


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores aware UTC datetimes and always hands back aware UTC (SQLite drops tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use an aware UTC datetime")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON}


SEVERITIES = ("low", "medium", "high", "critical")
# open -> contained -> resolved -> closed (contained may be skipped)
STATUSES = ("open", "contained", "resolved", "closed")


class Counter(Base):
    """Gapless sequences (incident numbers): incremented inside the writer's transaction."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    title: Mapped[str] = mapped_column(String(300))
    severity: Mapped[str] = mapped_column(String(10), default="medium")
    status: Mapped[str] = mapped_column(String(12), default="open", index=True)
    channel_id: Mapped[str | None] = mapped_column(String(40))
    thread_ts: Mapped[str | None] = mapped_column(String(40))
    card_ts: Mapped[str | None] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(60))
    owner: Mapped[str | None] = mapped_column(String(60))
    created_at: Mapped[dt.datetime] = mapped_column(default=column_now)
    updated_at: Mapped[dt.datetime] = mapped_column(default=column_now, onupdate=column_now)
    # The regulator clock: when the organisation became aware of a personal-data breach.
    personal_data: Mapped[bool] = mapped_column(Boolean, default=False)
    aware_at: Mapped[dt.datetime | None] = mapped_column()
    notified_at: Mapped[dt.datetime | None] = mapped_column()
    notified_reference: Mapped[str | None] = mapped_column(String(300))
    account_id: Mapped[str | None] = mapped_column(String(20))
    region: Mapped[str | None] = mapped_column(String(30))
    # The primary affected resource (instance id, access key id, bucket): joins findings.
    resource_id: Mapped[str | None] = mapped_column(String(200), index=True)
    resource_type: Mapped[str | None] = mapped_column(String(60))
    resolution: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[dt.datetime | None] = mapped_column()
    closed_at: Mapped[dt.datetime | None] = mapped_column()
    is_drill: Mapped[bool] = mapped_column(Boolean, default=False)
    support_case_id: Mapped[str | None] = mapped_column(String(100))
    # Free-form facts computed later (blast radius, tags, forensics stack) for cards.
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Head of the timeline chain, so truncating the newest events is detectable too.
    timeline_head: Mapped[str | None] = mapped_column(String(64))
    timeline_count: Mapped[int] = mapped_column(Integer, default=0)
    # Keyed chains (storage.timeline): the key's public id (never the key) and the MAC sealing
    # (count, head). NULL key id: a legacy chain of plain SHA-256.
    timeline_key_id: Mapped[str | None] = mapped_column(String(80))
    timeline_seal: Mapped[str | None] = mapped_column(String(64))

    events: Mapped[list[TimelineEvent]] = relationship(
        back_populates="incident", order_by="TimelineEvent.seq", lazy="raise_on_sql"
    )

    @property
    def key(self) -> str:
        return f"INC-{self.number}"


class TimelineEvent(Base):
    """One append-only event. `hash` = SHA-256(prev_hash + canonical content)."""

    __tablename__ = "timeline_events"
    __table_args__ = (UniqueConstraint("incident_id", "seq", name="uq_timeline_incident_seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    seq: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[dt.datetime] = mapped_column()
    actor: Mapped[str] = mapped_column(String(60))
    kind: Mapped[str] = mapped_column(String(60))
    summary: Mapped[str] = mapped_column(Text)
    # Canonical JSON text, exactly what was hashed (a JSON column could reorder keys).
    details: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    incident: Mapped[Incident] = relationship(back_populates="events", lazy="raise_on_sql")


class Finding(Base):
    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(primary_key=True)
    finding_id: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(Text)
    severity: Mapped[float] = mapped_column(Float)
    account_id: Mapped[str | None] = mapped_column(String(20))
    region: Mapped[str | None] = mapped_column(String(30))
    resource_type: Mapped[str | None] = mapped_column(String(60))
    resource_id: Mapped[str | None] = mapped_column(String(200), index=True)
    first_seen: Mapped[dt.datetime | None] = mapped_column()
    last_seen: Mapped[dt.datetime | None] = mapped_column()
    updated_at: Mapped[dt.datetime | None] = mapped_column()
    received_at: Mapped[dt.datetime] = mapped_column(default=column_now)
    count: Mapped[int] = mapped_column(Integer, default=1)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    sample: Mapped[bool] = mapped_column(Boolean, default=False)
    raw: Mapped[dict[str, Any]] = mapped_column(JSON)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), index=True)


REQUEST_STATUSES = (
    "pending",
    "approved",
    "running",
    "succeeded",
    "partial",
    "failed",
    "rejected",
    "expired",
    "interrupted",
    "rolled_back",
)


class ContainmentRequest(Base):
    """A plan awaiting (or past) a second responder's decision."""

    __tablename__ = "containment_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    # contain | retry | rollback | forensics | forensics_teardown | wipe
    kind: Mapped[str] = mapped_column(String(30), default="contain")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("containment_requests.id"))
    target_type: Mapped[str] = mapped_column(String(30))
    target_id: Mapped[str] = mapped_column(String(200))
    account_id: Mapped[str | None] = mapped_column(String(20))
    region: Mapped[str | None] = mapped_column(String(30))
    reason: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(60))
    requested_at: Mapped[dt.datetime] = mapped_column(default=column_now)
    expires_at: Mapped[dt.datetime | None] = mapped_column()
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    decided_by: Mapped[str | None] = mapped_column(String(60))
    decided_at: Mapped[dt.datetime | None] = mapped_column()
    decision_reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    card_channel: Mapped[str | None] = mapped_column(String(40))
    card_ts: Mapped[str | None] = mapped_column(String(40))
    # Touched by the executing process while it runs: a `running` request whose heartbeat
    # went stale lost its process (restart, crash) and is marked interrupted (0002).
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column()

    steps: Mapped[list[ActionStep]] = relationship(
        back_populates="request", order_by="ActionStep.position", lazy="selectin"
    )


class ActionStep(Base):
    __tablename__ = "action_steps"
    __table_args__ = (UniqueConstraint("request_id", "action", name="uq_step_request_action"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("containment_requests.id"))
    position: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(60))
    # pending | running | succeeded | failed | skipped | rolled_back | interrupted
    status: Mapped[str] = mapped_column(String(20), default="pending")
    started_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)

    request: Mapped[ContainmentRequest] = relationship(back_populates="steps")


class Reminder(Base):
    """A deadline reminder. The row is the truth; the scheduler only wakes us up."""

    __tablename__ = "reminders"
    __table_args__ = (
        Index("ix_reminders_status_due", "status", "due_at"),
        UniqueConstraint("dedupe_key", name="uq_reminders_dedupe_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), index=True)
    # gdpr | gdpr_overdue | approval_expiry | stale | digest | abuse | unowned | task | followup
    kind: Mapped[str] = mapped_column(String(30))
    due_at: Mapped[dt.datetime] = mapped_column()
    # pending -> sent (claimed atomically before posting) | cancelled
    status: Mapped[str] = mapped_column(String(12), default="pending")
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    sent_at: Mapped[dt.datetime | None] = mapped_column()
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    message: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=column_now)


ROLES = ("commander", "scribe", "comms")


class IncidentRole(Base):
    """Who holds one role on one incident (the owner is `Incident.owner`)."""

    __tablename__ = "incident_roles"
    __table_args__ = (UniqueConstraint("incident_id", "role", name="uq_incident_roles_role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    user_id: Mapped[str] = mapped_column(String(60))
    assigned_by: Mapped[str] = mapped_column(String(60))
    assigned_at: Mapped[dt.datetime] = mapped_column(default=column_now)


class IncidentTask(Base):
    """A follow-up task: numbered per incident, owned, due on a day; open until done."""

    __tablename__ = "incident_tasks"
    __table_args__ = (UniqueConstraint("incident_id", "number", name="uq_incident_tasks_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(60))
    due_on: Mapped[dt.date] = mapped_column(Date)
    created_by: Mapped[str] = mapped_column(String(60))
    created_at: Mapped[dt.datetime] = mapped_column(default=column_now)
    done_at: Mapped[dt.datetime | None] = mapped_column()
    done_by: Mapped[str | None] = mapped_column(String(60))


class Cursor(Base):
    """Small named positions (GuardDuty polling's last updatedAt per region, etc.)."""

    __tablename__ = "cursors"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(default=column_now, onupdate=column_now)
