"""Investigation and aftermath in Slack: `/incident impact|trail|abuse|wipe`, `/forensics`.

Each handler checks its arguments inline (a bad one is answered in the ack) and runs the AWS
work after the ack in `runtime.background`. `/forensics` and `/incident wipe` post an
approval card through the containment service, whose Approve button runs the clean-room
and wipe engines (bot/investigation_work.py adds them to `runtime.services.engines`), so the
two-person rule, expiry, exactly-once execution, live progress and restart recovery are the
same as for containment. The impact sweeper and the abuse watcher live there too.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from bot.approvals import service
from bot.listeners.incident_posts import post_new_incident, refresh_incident
from bot.listeners.incident_subcommands import take_incident
from bot.listeners.slash import Invocation, Reply, SlashCommand, Subcommand, spec
from bot.views import investigation as iv
from bot.views import replies
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
from storage.models import Incident

if TYPE_CHECKING:
    from bot.app import IncidentBotApp
    from bot.runtime import Runtime

log = logging.getLogger(__name__)


def aws_context(runtime: Runtime, incident_key: str, *, dry_run: bool = False) -> ActionContext:
    return action_context(
        incident_key=incident_key,
        options=runtime.config.containment,
        dry_run=dry_run,
        now=runtime.now,
        client_hooks=runtime.options.client_hooks,
        forensics=runtime.config.forensics,
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


def impact_cmd(inv: Invocation) -> Reply | None:
    runtime = inv.runtime
    with runtime.database.read_session() as session:
        found, _ = take_incident(inv, session, example="/incident impact INC-42")
        if not found.resource_id:
            raise UserError(iv.no_resource_yet(found.key))
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
        refresh_incident(runtime, key, line=iv.impact_line(inv.user_id))
        text, blocks = impact_reply(key, impact)
        return Reply(text, blocks)

    inv.defer("estimate impact", work)
    return None


# -- /incident trail -------------------------------------------------------------------------


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
                title=iv.trail_file_title(key, resource_id, len(result.rows)),
                content=result.to_csv(),
                initial_comment=iv.trail_comment(result.headline(), inv.user_id),
            )
        text, blocks = trail_reply(key, result)
        return Reply(text, blocks)

    inv.defer("CloudTrail lookup", work)
    return None


# -- /incident abuse -------------------------------------------------------------------------


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
            refresh_incident(runtime, key, line=iv.abuse_answered_line(inv.user_id))
            return Reply(iv.abuse_answered_reply(key))

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
        support = result.support.message
        if result.opened:
            post_new_incident(runtime, key, opener=inv.user_id, fallback_channel=inv.channel_id)
        else:
            line = iv.abuse_recorded_line(reference, inv.user_id, summary, support)
            refresh_incident(runtime, key, line=line)
        return Reply(
            iv.abuse_reply(
                key, reference, support, opened=result.opened, every=abuse_svc.REMIND_EVERY
            )
        )

    inv.defer("abuse report", work)
    return None


# -- /incident wipe --------------------------------------------------------------------------


def wipe_cmd(inv: Invocation) -> Reply | None:
    runtime = inv.runtime
    with runtime.database.read_session() as session:
        found, rest = take_incident(inv, session, example="/incident wipe INC-42")
        terminate = rest.strip().lower() == "terminate"
        if rest.strip() and not terminate:
            raise UserError(iv.wipe_takes_only_terminate(found.key))
        if found.status not in wipe_svc.WIPEABLE:
            raise UserError(iv.wipe_resolve_first(found.key, found.status))
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
            terminate=terminate,
        )
        answer = _post_request_card(
            runtime,
            proposed.request_id,
            proposed.created,
            channel,
            what=iv.wipe_plan_what(key, proposed.items),
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
        **iv.wipe_list_file(key, request_id),
        content=wipe_svc.plan_text(key, view.plan),
    )


def _post_request_card(
    runtime: Runtime, request_id: int, created: bool, channel: str | None, *, what: str
) -> Reply:
    containment = service(runtime)
    _, card_channel, card_ts = containment.card_view(request_id)
    if created or card_ts is None:
        card_channel, card_ts = containment.post_card(request_id, channel_id=channel)
    return Reply(iv.request_card_reply(what, request_id, card_channel, created=created))


# -- /forensics ------------------------------------------------------------------------------


def _forensics_incident(inv: Invocation, example: str) -> Incident:
    with inv.runtime.database.read_session() as session:
        found, _ = take_incident(inv, session, example=example)
        return found


def forensics_create(inv: Invocation) -> Reply | None:
    runtime = inv.runtime
    word = inv.args.split(" ", 1)[0] if inv.args else ""
    if word and not svc.looks_like_key(word):
        return forensics_help(inv)  # `/forensics frobnicate`: not a key, not a subcommand
    found = _forensics_incident(inv, "/forensics INC-42")
    if found.status == "closed":
        raise UserError(iv.clean_room_closed(found.key))
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
            what=iv.clean_room_what(key),
        )

    inv.defer("plan clean room", work)
    return None


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
            what=iv.teardown_what(key),
        )

    inv.defer("plan clean-room teardown", work)
    return None


def forensics_help(inv: Invocation) -> Reply:
    word = inv.args.split(" ", 1)[0] if inv.args else ""
    text = replies.unknown_subcommand(forensics.command, word, forensics.help_text())
    return Reply(*replies.text_reply(text))


def register(app: IncidentBotApp) -> None:
    forensics.register(app)


# `/incident` subcommands of this module, in the order `/incident help` lists them.
INCIDENT_SUBCOMMANDS: tuple[Subcommand, ...] = (
    spec(
        "impact",
        usage="/incident impact [INC-N]",
        summary="Blast radius: the resource's tags, account and OU, exposure and what it reaches.",
        handler=impact_cmd,
    ),
    spec(
        "trail",
        usage="/incident trail <instance-id|access-key-id> [hours]",
        summary="Recent CloudTrail events for a resource or key; the full list as a file.",
        handler=trail_cmd,
    ),
    spec(
        "abuse",
        usage="/incident abuse <case-id> <summary>",
        summary="Record an AWS abuse report (on a new incident, or the one named or run in) "
        "and remind until `/incident abuse answered [INC-N]`.",
        handler=abuse_cmd,
    ),
    spec(
        "wipe",
        usage="/incident wipe [INC-N] [terminate]",
        summary="Once resolved: delete the evidence the incident created (listed, then approved); "
        "`terminate` also retires the isolated instance.",
        handler=wipe_cmd,
    ),
)

# `/forensics` and its subcommands.
FORENSICS_SUBCOMMANDS: tuple[Subcommand, ...] = (
    spec(
        "create",
        usage="/forensics [INC-N]",
        summary="Build the forensic clean room from the incident's snapshots (after approval).",
        handler=forensics_create,
    ),
    spec(
        "teardown",
        usage="/forensics teardown [INC-N]",
        summary="Delete the clean-room stack (after approval); the snapshots stay.",
        handler=forensics_teardown,
    ),
    spec("help", usage="/forensics help", summary="This list.", handler=forensics_help),
)
forensics = SlashCommand("/forensics", fallback="create", subcommands=FORENSICS_SUBCOMMANDS)
