"""The slash-command registry and dispatch rules, without HTTP."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bot.background import Background
from bot.listeners.slash import Invocation, Reply, SlashCommand, dispatch, spec
from commands.errors import UserError


class FakeAck:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, **kwargs) -> None:
        self.calls.append(kwargs)


def invocation(**kw) -> Invocation:
    runtime = SimpleNamespace(background=Background(max_workers=1))
    sent: list[Reply] = []
    inv = Invocation(
        runtime=runtime,
        command="/x",
        name="y",
        args="",
        user_id="U1",
        channel_id="C1",
        reply_to=sent.append,
        **kw,
    )
    inv.sent = sent  # type: ignore[attr-defined]
    return inv


def test_user_error_text_is_escaped_in_the_ack():
    ack = FakeAck()

    def handler(inv):
        raise UserError("<!here> is not a key; try `/x y <key>`.")

    dispatch(invocation(), handler, background=False, ack=ack)
    assert ack.calls == [
        {
            "text": "&lt;!here&gt; is not a key; try `/x y &lt;key&gt;`.",
            "response_type": "ephemeral",
        }
    ]


def test_unexpected_error_inline_is_answered_not_raised():
    ack = FakeAck()
    dispatch(invocation(), lambda inv: 1 / 0, background=False, ack=ack)
    assert ack.calls[0]["text"].startswith("`/x y` failed: ZeroDivisionError")


def test_background_reply_goes_to_reply_to_after_empty_ack():
    ack = FakeAck()
    inv = invocation()
    dispatch(inv, lambda i: Reply("done"), background=True, ack=ack)
    assert ack.calls == [{}]
    assert inv.runtime.background.wait_idle(2)
    assert [r.text for r in inv.sent] == ["done"]


def test_deferred_followups_run_in_order_after_inline_reply():
    ack = FakeAck()
    inv = invocation()

    def handler(i):
        i.defer("one", lambda: Reply("first"))
        i.defer("two", lambda: Reply("second"))
        return Reply("now")

    dispatch(inv, handler, background=False, ack=ack)
    assert ack.calls[0]["text"] == "now"
    assert inv.runtime.background.wait_idle(2)
    assert [r.text for r in inv.sent] == ["first", "second"]


def test_registry_parses_and_refuses_duplicates():
    def help_(inv):
        return Reply("help")

    def go(inv):
        return Reply("go")

    cmd = SlashCommand(
        "/demo",
        subcommands=(
            spec("help", handler=help_, usage="/demo help", summary="Help."),
            spec("go", handler=go, usage="/demo go <where>", summary="Go.", aliases=("g",)),
        ),
    )
    sub, typed, rest = cmd.parse("G  far away ")
    assert (sub.name, typed, rest) == ("go", "g", "far away")
    sub, typed, rest = cmd.parse("fly high")
    assert (sub.name, typed, rest) == ("help", "fly", "fly high")
    assert "`/demo go &lt;where&gt;` Go." in cmd.help_text()
    with pytest.raises(ValueError, match="registered twice"):
        cmd.add(spec("go", handler=lambda inv: None, usage="/demo go", summary="again"))
