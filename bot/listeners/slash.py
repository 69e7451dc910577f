"""Slash-command plumbing shared by /incident, /contain, /forensics and friends.

A command is a `SlashCommand` with named subcommands. Each subcommand is a plain function
taking an `Invocation` and returning a `Reply` (or None). Two modes:

* inline (the default; reads and validation only): runs in the request and its reply *is*
  the ack, so the user sees the answer in one round trip. Whatever writes or calls Slack/AWS
  is handed on with `inv.defer(description, fn)` and runs after the ack;
* background=True: the ack goes out empty at once and the whole function runs in
  `runtime.background`.

Replies after the ack go through `inv.reply_to` (response_url for commands and buttons, a DM
for modals). Errors are never swallowed: a `UserError` becomes an ephemeral one-sentence
answer (`replies.user_error`: its `code` kept, what it quotes inert); anything else is logged,
answered ephemerally ("... failed: ...") and, when the incident is known (`inv.incident_key`),
written to that incident's timeline as a `bot.error` event. A job cut short by shutdown says
so to the user and on the timeline (`bot.interrupted`).

Adding a subcommand from another module: write the handler, list it in the module's table,
and add the table to the command in bot/wiring.py::

    def notified_cmd(inv: Invocation) -> Reply: ...

    SUBCOMMANDS = (
        spec("notified", handler=notified_cmd, usage="/incident notified [INC-N] <reference>",
             summary="Record that the regulator was notified", background=True),
    )
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, BoltContext
from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import SQLAlchemyError

from bot.app import runtime_of
from bot.background import Busy
from bot.views import blocks as bk
from bot.views import replies
from bot.views.card_recovery import slack_failure
from commands.errors import UserError

if TYPE_CHECKING:
    from bot.app import IncidentBotApp
    from bot.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class Reply:
    """What the user sees in answer to a command (ephemeral unless `in_channel`)."""

    text: str
    blocks: list[dict[str, Any]] | None = None
    in_channel: bool = False

    def as_kwargs(self) -> dict[str, Any]:
        out = bk.message(self.text, self.blocks)
        out["response_type"] = "in_channel" if self.in_channel else "ephemeral"
        return out


@dataclass
class Invocation:
    """One run of a slash command, as handlers see it."""

    runtime: Runtime
    command: str  # "/incident"
    name: str  # the subcommand ("open"), "" when the command has none
    args: str  # the text after the subcommand
    user_id: str
    channel_id: str
    response_url: str | None = None
    trigger_id: str | None = None
    # How to answer after the ack: response_url for commands and buttons, a DM for modals.
    reply_to: Callable[[Reply], None] | None = None
    # Set by handlers as soon as they know the incident, so failures land on its timeline.
    incident_key: str | None = None
    followups: list[tuple[str, Callable[[], Reply | None]]] = field(default_factory=list)
    # The command run (its help lists its subcommands); None for buttons and modals.
    slash: SlashCommand | None = None
    # `args` as Slack sent it: with escaping on (manifest.yml), a mention is `<@U123|name>`,
    # which `args` shows as `@name`; subcommands that need the user ID read this.
    raw_args: str = ""

    @property
    def label(self) -> str:
        """What was run (`/incident open`): for logs, the timeline and replies."""
        return " ".join(part for part in (self.command, self.name) if part)

    def defer(self, description: str, fn: Callable[[], Reply | None]) -> None:
        """Run `fn` after the ack (e.g. a file upload after an inline answer)."""
        self.followups.append((description, fn))

    def send(self, reply: Reply | None) -> None:
        """Answer after the ack (background work has no ack left to answer with)."""
        if reply is None or self.reply_to is None:
            return
        self.reply_to(reply)


Handler = Callable[[Invocation], "Reply | None"]

# Slack's escaped references in command text: <@U1|name>, <#C1|general>, <https://x.io|x.io>.
_ESCAPED = re.compile(r"<([@#])([UWCG][A-Z0-9]+)(?:\|([^>]*))?>|<(https?://[^>|]+)(?:\|([^>]*))?>")


def unescaped(text: str) -> str:
    """Command text as the user typed it: escaped user and channel mentions back to `@name`
    and `#general`, a link back to its URL when the URL is what it showed. Anything else
    (`<!channel>`, a link whose text is not its URL) stays as sent, to be shown escaped."""

    def plain(m: re.Match[str]) -> str:
        if m.group(4):
            url, label = m.group(4), m.group(5)
            shown = label is None or url.split("://", 1)[1] == label or url == label
            return url if shown else m.group(0)
        sigil, ident, label = m.group(1), m.group(2), m.group(3)
        return sigil + (label.lstrip(sigil) if label else ident)

    return _ESCAPED.sub(plain, text)


def spec(
    name: str,
    *,
    handler: Handler,
    usage: str,
    summary: str,
    background: bool = False,
    aliases: tuple[str, ...] = (),
    hidden: bool = False,
) -> Subcommand:
    """A subcommand's entry in its module's table (e.g. `SUBCOMMANDS`)."""
    return Subcommand(name, handler, usage, summary, background, aliases, hidden)


@dataclass(frozen=True)
class Subcommand:
    name: str
    handler: Handler
    usage: str
    summary: str
    background: bool = False
    aliases: tuple[str, ...] = ()
    hidden: bool = False


class SlashCommand:
    """A slash command whose first word picks a subcommand (registry, not an if-chain)."""

    def __init__(
        self,
        command: str,
        *,
        fallback: str | None = "help",
        subcommands: Iterable[Subcommand] = (),
    ) -> None:
        self.command = command
        self.fallback = fallback  # subcommand for empty or unknown text
        self._subs: dict[str, Subcommand] = {}
        self._order: list[str] = []
        for sub in subcommands:
            self.add(sub)

    def add(self, sub: Subcommand) -> None:
        """Add `sub` (help lists subcommands in the order they were added)."""
        for key in (sub.name, *sub.aliases):
            if key in self._subs and self._subs[key] is not sub:
                raise ValueError(f"{self.command} {key} is registered twice")
            self._subs[key] = sub
        if sub.name not in self._order:
            self._order.append(sub.name)

    def get(self, name: str) -> Subcommand | None:
        return self._subs.get(name.lower())

    def subcommands(self) -> list[Subcommand]:
        return [self._subs[n] for n in self._order if not self._subs[n].hidden]

    def help_text(self) -> str:
        return replies.help_text(self.command, [(s.usage, s.summary) for s in self.subcommands()])

    def parse(self, text: str) -> tuple[Subcommand | None, str, str]:
        """(subcommand, its name as typed, remaining text); unknown -> (fallback, name, text)."""
        word, _, rest = (text or "").strip().partition(" ")
        sub = self.get(word) if word else None
        if sub is not None:
            return sub, word.lower(), rest.strip()
        fallback = self.get(self.fallback) if self.fallback else None
        return fallback, word.lower(), (text or "").strip()

    # -- the Bolt listener -----------------------------------------------------------------

    def on_command(self, ack: Ack, command: dict[str, Any], context: BoltContext) -> None:
        """The Bolt listener: parse the subcommand, then answer or dispatch it. (Bolt builds
        each argument a listener names on every request: `respond` is taken from the
        context only when a reply follows the ack.)"""
        runtime = runtime_of(context)
        sub, typed, rest = self.parse(command.get("text", ""))
        inv = Invocation(
            runtime=runtime,
            command=self.command,
            name=sub.name if sub else typed,
            args=unescaped(rest),
            raw_args=rest,
            user_id=command.get("user_id", ""),
            channel_id=command.get("channel_id", ""),
            response_url=command.get("response_url"),
            trigger_id=command.get("trigger_id"),
            reply_to=lambda reply: context.respond(**reply.as_kwargs()),
            slash=self,
        )
        if sub is None:
            ack(**Reply(self.help_text()).as_kwargs())
            return
        if sub.name == self.fallback and typed and typed != sub.name:
            inv.args = inv.raw_args = typed  # help for an unknown word: let the handler say so
        dispatch(inv, sub.handler, background=sub.background, ack=ack)

    def register(self, app: IncidentBotApp) -> None:
        app.command(self.command)(self.on_command)


def dispatch(
    inv: Invocation,
    handler: Handler,
    *,
    background: bool,
    ack: Ack,
    answer_in_ack: bool = True,
) -> None:
    """Run `handler` inline (its reply is the ack) or after an empty ack in the background.

    `answer_in_ack=False` is for requests whose ack body Slack does not show (buttons): the
    inline reply then goes through `inv.reply_to` after the ack.
    """
    if not background:
        try:
            reply = handler(inv)
        except UserError as exc:
            reply = Reply(replies.user_error(exc))
        except Exception as exc:
            log.exception("%s failed", inv.label)
            reply = Reply(failure_text(inv, exc, recorded=report_failure(inv, exc)))
        if reply is not None and not answer_in_ack:
            inv.followups.insert(0, ("reply", lambda: reply))
        if inv.followups:
            # Queue the deferred work before acking, so a full pool is said in the ack.
            try:
                submit(inv, inv.label, lambda: None)
            except Busy:
                log.warning("background pool busy; refused follow-ups of %s", inv.label)
                reply = Reply(replies.BUSY)
        if answer_in_ack and reply is not None:
            ack(**reply.as_kwargs())
        else:
            ack()
        return

    try:
        submit(inv, inv.label, lambda: handler(inv))
    except Busy:
        log.warning("background pool busy; refused %s", inv.label)
        busy = Reply(replies.BUSY)
        if answer_in_ack:
            ack(**busy.as_kwargs())
        else:
            ack()
        return
    ack()


def submit(inv: Invocation, description: str, fn: Callable[[], Reply | None]) -> None:
    """Run `fn`, then any deferred follow-ups, after the ack.

    Replies go to response_url; a UserError becomes its one-sentence answer; any other error
    reaches the user and the incident's timeline through the job's on_error.
    """

    def job() -> None:
        steps: list[Callable[[], Reply | None]] = [fn]
        while steps:
            step = steps.pop(0)
            try:
                inv.send(step())
            except UserError as exc:
                inv.send(Reply(replies.user_error(exc)))
                return
            steps.extend(f for _, f in inv.followups)
            inv.followups.clear()

    inv.runtime.background.submit(
        job,
        description=f"{description} by {inv.user_id}",
        on_error=lambda exc: _on_error(inv, exc),
        on_interrupt=lambda: _on_interrupt(inv),
    )


def failure_text(inv: Invocation, exc: BaseException, *, recorded: bool) -> str:
    """What the user is told: only what is true (`recorded`: the timeline write succeeded)."""
    return replies.failure_text(
        inv.label, cause_of(exc), incident_key=inv.incident_key, recorded=recorded
    )


def cause_of(exc: BaseException) -> str:
    """The error for a responder: an AWS or Slack error says what it is; a database error's
    text is SQL and driver detail (kept for the logs), so it is named, not shown."""
    if isinstance(exc, SQLAlchemyError):
        return replies.DATABASE_FAILED
    if isinstance(exc, SlackApiError | TimeoutError):
        return slack_failure(exc)
    return replies.failure_cause(exc)


def _on_error(inv: Invocation, exc: BaseException) -> None:
    inv.send(Reply(failure_text(inv, exc, recorded=report_failure(inv, exc))))


def _on_interrupt(inv: Invocation) -> None:
    record_on_timeline(
        inv,
        kind="bot.interrupted",
        summary=f"{inv.label} by {inv.user_id} was interrupted by a shutdown before it finished",
        details={"command": inv.label, "args": inv.args[:500]},
    )
    inv.send(Reply(replies.interrupted_text(inv.label)))


def report_failure(inv: Invocation, exc: BaseException) -> bool:
    """Record the failure on the incident's timeline; whether that worked."""
    return record_on_timeline(
        inv,
        kind="bot.error",
        summary=f"{inv.label} by {inv.user_id} failed: {type(exc).__name__}: {exc}",
        details={"command": inv.label, "args": inv.args[:500], "error": type(exc).__name__},
    )


def record_on_timeline(
    inv: Invocation, *, kind: str, summary: str, details: dict[str, Any]
) -> bool:
    """Best effort: an error report must not raise (the database may be what failed).
    Whether the event was written."""
    if not inv.incident_key:
        return False
    from commands.events import record_quietly

    return record_quietly(
        inv.runtime.database,
        incident_key=inv.incident_key,
        kind=kind,
        summary=summary,
        details=details,
    )
