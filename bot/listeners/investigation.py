"""Investigation and aftermath in Slack: `/incident impact|trail|abuse|wipe`, `/forensics`.

Each handler checks its arguments inline (a bad one is answered in the ack) and runs the AWS
work after the ack in `runtime.background`. `/forensics` and `/incident wipe` post an
approval card through the containment service, whose Approve button runs this module's
engines (registered under `ENGINES_KEY`), so the two-person rule, expiry, exactly-once
execution, live progress and restart recovery are the same as for containment.

New incidents that name a resource get their blast radius estimated by a small sweeper that
serving processes start (`start(runtime)`, called by bot.server.start_services; every
`SWEEP_DEFAULT` seconds, `runtime.extras[IMPACT_SWEEP_KEY] = 0` turns it off), so incidents
from GuardDuty, `/contain` or anywhere else are covered, also after a restart. The same
`start` runs the abuse watcher, which stops an abuse report's reminders once its Support case
shows the answer (`ABUSE_CHECK_KEY`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import TYPE_CHECKING

from sqlalchemy import select

from bot.approvals import ENGINES_KEY, HOOKS_KEY, service
from bot.guardduty.intake import intake_is_hot
from bot.guardduty.publisher import ACTOR as GUARDDUTY_ACTOR
from bot.guardduty.publisher import publisher_for
from bot.listeners.incident_posts import post_new_incident, refresh_incident
from bot.listeners.incident_subcommands import subcommand, take_incident
from bot.listeners.slash import Invocation, Reply, SlashCommand
from bot.periodic import Periodic
from bot.views import blocks as bk
from bot.views.investigation import impact_reply, trail_reply
from commands import abuse as abuse_svc
from commands import forensics as forensics_svc
from commands import impact as impact_svc
from commands import incidents as svc
from commands import trail as trail_svc
from commands import wipe as wipe_svc
from commands.approvals.plans import action_context
from commands.errors import UserError
from containment.context import ActionContext
from containment.targets import Target
from storage.facts import IMPACT
from storage.models import Incident

if TYPE_CHECKING:
    from bot.app import IncidentBotApp, Runtime

log = logging.getLogger(__name__)

IMPACT_SWEEP_KEY = "investigation.impact_sweep_seconds"
SWEEP_DEFAULT = 10.0
ABUSE_CHECK_KEY = "investigation.abuse_check_seconds"
ABUSE_CHECK_DEFAULT = 900.0  # Support API calls are rate limited; answers take hours anyway
CARD_INTERVAL = 1.0  # seconds between card refreshes driven by engine progress
RECENT = dt.timedelta(days=2)  # the sweeper looks at incidents opened this recently


def aws_context(runtime: Runtime, incident_key: str, *, dry_run: bool = False) -> ActionContext:
    return action_context(
        incident_key=incident_key,
        options=runtime.config.containment,
        dry_run=dry_run,
        now=runtime.now,
        client_hooks=tuple(runtime.extras.get(HOOKS_KEY, ())),
    )


def default_region(runtime: Runtime) -> str:
    return (runtime.config.guardduty.regions or ["us-east-1"])[0]


def _expiry(runtime: Runtime) -> dt.timedelta:
    return dt.timedelta(minutes=runtime.config.approvals.expire_after_minutes)


def _implied(inv: Invocation) -> Incident | None:
    with inv.runtime.database.read_session() as session:
        found = svc.find_by_channel(session=session, channel_id=inv.channel_id)
        return found if found is not None and found.status != "closed" else None


# -- /incident impact ------------------------------------------------------------------------


@subcommand(
    "impact",
    usage="/incident impact [INC-N]",
    summary="Blast radius: the resource's tags, its account and OU, what shares its network.",
)
def impact_cmd(inv: Invocation) -> Reply | None:
    runtime = inv.runtime
    with runtime.database.read_session() as session:
        found, _ = take_incident(inv, session, example="/incident impact INC-42")
        if not found.resource_id:
            raise UserError(
                f"{found.key} names no affected resource yet: /contain <instance-id> or a "
                "GuardDuty finding sets one."
            )
        key = found.key

    def work() -> Reply:
        impact = impact_svc.refresh_impact(
            db=runtime.database,
            incident_key=key,
            ctx=aws_context(runtime, key),
            tag_keys=runtime.config.impact.tag_keys,
            actor=inv.user_id,
            default_region=default_region(runtime),
        )
        refresh_incident(runtime, key, line=f"🎯 Blast radius estimated by {bk.user(inv.user_id)}.")
        text, blocks = impact_reply(key, impact)
        return Reply(text, blocks)

    inv.defer("estimate impact", work)
    return None


# -- /incident trail -------------------------------------------------------------------------


@subcommand(
    "trail",
    usage="/incident trail <instance-id|access-key-id> [hours]",
    summary="Recent CloudTrail events for a resource or key; the full list as a file.",
)
def trail_cmd(inv: Invocation) -> Reply | None:
    runtime = inv.runtime
    resource_id, hours = trail_svc.parse_args(inv.args)
    implied = _implied(inv)
    with runtime.database.read_session() as session:
        incident = trail_svc.resolve_incident(
            session=session,
            incident_key=implied.key if implied else None,
            resource_id=resource_id,
        )
        key = incident.key
        channel, thread = incident.channel_id, incident.thread_ts
    inv.incident_key = key

    def work() -> Reply:
        _, result = trail_svc.run_trail(
            db=runtime.database,
            ctx=aws_context(runtime, key),
            incident_key=key,
            resource_id=resource_id,
            hours=hours,
            actor=inv.user_id,
            default_region=default_region(runtime),
        )
        if result.rows:
            # The file goes where the incident lives; the summary answers the asker.
            runtime.client.files_upload_v2(
                channel=channel or inv.channel_id,
                thread_ts=thread if channel else None,
                filename=result.filename(),
                title=f"{key}: CloudTrail for {resource_id} ({len(result.rows)} events)",
                content=result.to_csv(),
                initial_comment=bk.esc(result.headline()) + f" (for {bk.user(inv.user_id)})",
            )
        text, blocks = trail_reply(key, result)
        return Reply(text, blocks)

    inv.defer("CloudTrail lookup", work)
    return None


# -- /incident abuse -------------------------------------------------------------------------


@subcommand(
    "abuse",
    usage="/incident abuse <case-id> <summary>",
    summary="Record an AWS abuse report (on a new incident, or the one named or run in) and "
    "remind until `/incident abuse answered [INC-N]`.",
)
def abuse_cmd(inv: Invocation) -> Reply | None:
    runtime = inv.runtime
    first, _, rest = inv.args.partition(" ")
    if first.lower() == "answered":
        inv.args = rest.strip()
        with runtime.database.read_session() as session:
            found, note = take_incident(inv, session, example="/incident abuse answered INC-42")
            key = found.key

        def answered() -> Reply:
            abuse_svc.mark_answered(
                db=runtime.database, incident_key=key, actor=inv.user_id, note=note or None
            )
            refresh_incident(
                runtime, key, line=f"✅ Abuse report answered ({bk.user(inv.user_id)})."
            )
            return Reply(f"Marked the abuse report on *{key}* answered; reminders stopped.")

        inv.defer("abuse answered", answered)
        return None

    named = None
    if svc.looks_like_key(first):  # `/incident abuse INC-7 <case-id> <summary>` joins INC-7
        with runtime.database.read_session() as session:
            named = svc.get_incident(session=session, key=first)
        inv.args = rest.strip()
    reference, summary = abuse_svc.parse_args(inv.args)
    implied = named or _implied(inv)
    if implied is not None:
        inv.incident_key = implied.key

    def work() -> Reply:
        account = None
        if implied is not None:
            account = implied.account_id
        result = abuse_svc.report_abuse(
            db=runtime.database,
            ctx=aws_context(runtime, implied.key if implied else "abuse"),
            reference=reference,
            summary=summary,
            actor=inv.user_id,
            incident_key=implied.key if implied else None,
            account_id=account,
        )
        key = result.incident_key
        inv.incident_key = key
        support = bk.esc(result.support.message)
        if result.opened:
            post_new_incident(runtime, key, opener=inv.user_id, fallback_channel=inv.channel_id)
        else:
            refresh_incident(
                runtime,
                key,
                line=f"📨 AWS abuse report `{bk.esc(reference)}` recorded by "
                f"{bk.user(inv.user_id)}: {bk.esc(summary)}. {support}",
            )
        verb = "Opened" if result.opened else "Recorded on"
        return Reply(
            f"{verb} *{key}* for abuse report `{bk.esc(reference)}`. {support} I will remind "
            f"every {abuse_svc.REMIND_EVERY.total_seconds() / 3600:g} h until "
            f"`/incident abuse answered {key}`."
        )

    inv.defer("abuse report", work)
    return None


# -- /incident wipe --------------------------------------------------------------------------


@subcommand(
    "wipe",
    usage="/incident wipe [INC-N]",
    summary="Once resolved: delete the evidence the incident created (listed, then approved).",
)
def wipe_cmd(inv: Invocation) -> Reply | None:
    runtime = inv.runtime
    with runtime.database.read_session() as session:
        found, _ = take_incident(inv, session, example="/incident wipe INC-42")
        if found.status not in wipe_svc.WIPEABLE:
            raise UserError(
                f"{found.key} is {found.status}: resolve it first "
                f"(/incident resolve {found.key} <summary>), then wipe its evidence."
            )
        key, channel = found.key, found.channel_id

    def work() -> Reply:
        cfg = runtime.config
        proposed = wipe_svc.propose_wipe(
            db=runtime.database,
            ctx=aws_context(runtime, key),
            incident_key=key,
            requested_by=inv.user_id,
            expire_after=_expiry(runtime),
            kms_pending_days=cfg.wipe.kms_pending_days,
            shared_kms_key=cfg.containment.evidence_kms_key_id,
            default_region=default_region(runtime),
            dry_run=cfg.containment.dry_run,
        )
        answer = _post_request_card(
            runtime,
            proposed.request_id,
            proposed.created,
            channel,
            what=f"The wipe plan of *{key}*"
            + (f" ({proposed.items} items)" if proposed.items > 0 else ""),
        )
        if proposed.created:
            _attach_wipe_list(runtime, proposed.request_id, key)
        return answer

    inv.defer("plan wipe", work)
    return None


def _attach_wipe_list(runtime: Runtime, request_id: int, key: str) -> None:
    """The full item list in the card's thread: the card itself may have to shorten it."""
    containment = service(runtime)
    view, card_channel, card_ts = containment.card_view(request_id)
    if not card_channel:
        return
    runtime.client.files_upload_v2(
        channel=card_channel,
        thread_ts=card_ts,
        filename=f"{key}-wipe-plan-{request_id}.md",
        title=f"{key}: every item the wipe (request #{request_id}) would delete",
        content=wipe_svc.plan_text(key, view.plan),
    )


def _post_request_card(
    runtime: Runtime, request_id: int, created: bool, channel: str | None, *, what: str
) -> Reply:
    containment = service(runtime)
    _, card_channel, card_ts = containment.card_view(request_id)
    if created or card_ts is None:
        card_channel, card_ts = containment.post_card(request_id, channel_id=channel)
    where = bk.channel(card_channel)
    if not created:
        return Reply(f"{what} is already waiting (request #{request_id}); its card is in {where}.")
    return Reply(f"{what} is posted for approval as request #{request_id} in {where}.")


# -- /forensics ------------------------------------------------------------------------------

forensics = SlashCommand("/forensics", fallback="create")


def _forensics_incident(inv: Invocation, example: str) -> Incident:
    with inv.runtime.database.read_session() as session:
        found, _ = take_incident(inv, session, example=example)
        return found


@forensics.subcommand(
    "create",
    usage="/forensics [INC-N]",
    summary="Build the forensic clean room from the incident's snapshots (after approval).",
)
def forensics_create(inv: Invocation) -> Reply | None:
    runtime = inv.runtime
    word = inv.args.split(" ", 1)[0] if inv.args else ""
    if word and not svc.looks_like_key(word):
        return forensics_help(inv)  # `/forensics frobnicate`: not a key, not a subcommand
    found = _forensics_incident(inv, "/forensics INC-42")
    if found.status == "closed":
        raise UserError(f"{found.key} is closed; a clean room is for live investigations.")
    key, channel = found.key, found.channel_id
    cfg = runtime.config

    def work() -> Reply:
        proposed = forensics_svc.propose(
            db=runtime.database,
            ctx=aws_context(runtime, key),
            incident_key=key,
            teardown=False,
            requested_by=inv.user_id,
            expire_after=_expiry(runtime),
            vpc_cidr=cfg.forensics.vpc_cidr,
            ami_id=cfg.forensics.ami_id,
            instance_type=cfg.forensics.instance_type,
            default_region=default_region(runtime),
            dry_run=cfg.containment.dry_run,
        )
        return _post_request_card(
            runtime,
            proposed.request_id,
            proposed.created,
            channel,
            what=f"The clean room of *{key}*",
        )

    inv.defer("plan clean room", work)
    return None


@forensics.subcommand(
    "teardown",
    usage="/forensics teardown [INC-N]",
    summary="Delete the clean-room stack (after approval); the snapshots stay.",
)
def forensics_teardown(inv: Invocation) -> Reply | None:
    runtime = inv.runtime
    found = _forensics_incident(inv, "/forensics teardown INC-42")
    key, channel = found.key, found.channel_id

    def work() -> Reply:
        proposed = forensics_svc.propose(
            db=runtime.database,
            ctx=aws_context(runtime, key),
            incident_key=key,
            teardown=True,
            requested_by=inv.user_id,
            expire_after=_expiry(runtime),
            default_region=default_region(runtime),
            dry_run=runtime.config.containment.dry_run,
        )
        return _post_request_card(
            runtime,
            proposed.request_id,
            proposed.created,
            channel,
            what=f"The clean-room teardown of *{key}*",
        )

    inv.defer("plan clean-room teardown", work)
    return None


@forensics.subcommand("help", usage="/forensics help", summary="This list.")
def forensics_help(inv: Invocation) -> Reply:
    word = inv.args.split(" ", 1)[0] if inv.args else ""
    intro = f"There is no `/forensics {bk.esc_cut(word, 50)}`. " if word else ""
    text = intro + forensics.help_text()
    return Reply(text, [bk.section(text)])


# -- card refreshes and the impact sweeper ---------------------------------------------------


class CardRefresher:
    """Re-render an incident's card after engine progress, at most once a second per card."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._last: dict[str, float] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, key: str) -> None:
        with self._lock:
            wait = self._last.get(key, -1e9) + CARD_INTERVAL - time.monotonic()
            if wait > 0:
                if key not in self._pending:  # one trailing refresh carries the latest state
                    self._pending.add(key)
                    timer = threading.Timer(wait, self._flush, args=(key,))
                    timer.daemon = True
                    timer.start()
                return
            self._last[key] = time.monotonic()
        self._refresh(key)

    def _flush(self, key: str) -> None:
        with self._lock:
            self._pending.discard(key)
            self._last[key] = time.monotonic()
        self._refresh(key)

    def _refresh(self, key: str) -> None:
        try:
            refresh_incident(self.runtime, key)
        except Exception:
            log.exception("could not refresh the card of %s", key)


class ImpactSweeper(Periodic):
    """Estimates the blast radius of recent incidents that name a resource and have none."""

    name = "impact-sweeper"

    def __init__(self, runtime: Runtime, every: float) -> None:
        super().__init__(every)
        self.runtime = runtime
        self._done: set[int] = set()  # tried in this process (AWS trouble becomes notes)

    def tick(self) -> list[str]:
        return self.sweep()

    def due(self) -> list[tuple[str, int, bool]]:
        """(key, id, whether its card is the GuardDuty publisher's) of incidents to estimate."""
        since = self.runtime.now() - RECENT
        with self.runtime.database.read_session() as session:
            rows = session.scalars(
                select(Incident).where(
                    Incident.status.in_(("open", "contained")),
                    Incident.resource_id.is_not(None),
                    Incident.created_at >= since,
                )
            ).all()
            keys = []
            for i in rows:
                if i.id in self._done or IMPACT.present(i):
                    continue
                self._done.add(i.id)
                keys.append((i.key, i.id, i.created_by == GUARDDUTY_ACTOR))
            return keys

    def _wait_for_quiet_intake(self) -> bool:
        """In a finding storm, estimates wait: intake's CPU and database lock come first.
        False when the sweeper was stopped meanwhile."""
        while intake_is_hot(self.runtime, within=1.0):
            if self._stop.wait(0.25):
                return False
        return not self._stop.is_set()

    def sweep(self) -> list[str]:
        due = self.due()
        for key, incident_id, from_guardduty in due:
            if not self._wait_for_quiet_intake():
                break
            impact = impact_svc.impact_for_new_incident(
                db=self.runtime.database,
                incident_key=key,
                ctx=aws_context(self.runtime, key),
                tag_keys=self.runtime.config.impact.tag_keys,
                default_region=default_region(self.runtime),
            )
            if impact is None:
                continue
            if from_guardduty:
                # The publisher paces GuardDuty cards (one update per 10 s, across processes).
                publisher_for(self.runtime).mark_stale(incident_id)
                continue
            try:
                refresh_incident(self.runtime, key)
            except Exception:
                log.exception("could not refresh the card of %s", key)
        return [key for key, _, _ in due]


def register(app: IncidentBotApp) -> None:
    runtime = app.runtime
    forensics.register(app)
    refresher = CardRefresher(runtime)
    clean_room = forensics_svc.CleanRoomEngine(database=runtime.database, on_facts=refresher)
    engines = runtime.extras.setdefault(ENGINES_KEY, {})
    engines.setdefault(forensics_svc.ENGINE, clean_room)
    engines.setdefault(
        wipe_svc.ENGINE,
        wipe_svc.WipeEngine(database=runtime.database, clean_room=clean_room, on_facts=refresher),
    )


class AbuseWatcher(Periodic):
    """Marks abuse reports answered when their Support case shows the answer."""

    name = "abuse-watcher"

    def __init__(self, runtime: Runtime, every: float) -> None:
        super().__init__(every)
        self.runtime = runtime

    def tick(self) -> list[str]:
        return self.check()

    def client_for(self, account_id: str | None) -> object:
        ctx = aws_context(self.runtime, "abuse")
        target = Target("instance", "-", abuse_svc.SUPPORT_REGION, account_id)
        return ctx.client("support", target)

    def check(self) -> list[str]:
        keys = abuse_svc.check_answers(db=self.runtime.database, client_for=self.client_for)
        for key in keys:
            try:
                refresh_incident(
                    self.runtime,
                    key,
                    line="✅ The abuse report's Support case shows an answer; reminders stopped.",
                )
            except Exception:
                log.exception("could not refresh the card of %s", key)
        return keys


def start(runtime: Runtime) -> None:
    """Serving processes only (bot.server.start_services): the new-incident impact sweeper
    and the abuse-report watcher (`runtime.extras[...] = 0` turns either off)."""
    for kind, slot, every_key, default in (
        (ImpactSweeper, "investigation.impact_sweeper", IMPACT_SWEEP_KEY, SWEEP_DEFAULT),
        (AbuseWatcher, "investigation.abuse_watcher", ABUSE_CHECK_KEY, ABUSE_CHECK_DEFAULT),
    ):
        every = runtime.extras.get(every_key, default)
        if every and slot not in runtime.extras:
            worker = runtime.extras[slot] = kind(runtime, float(every))
            worker.start()
            runtime.on_shutdown(worker.stop)
