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


def test_read_only_is_per_subcommand_and_never_background():
    def read(inv):
        return Reply("read")

    cmd = SlashCommand(
        "/demo",
        subcommands=(
            spec("help", handler=read, usage="/demo help", summary="Help.", read_only=True),
            spec("show", handler=read, usage="/demo show", summary="Show.", read_only=True),
            spec("go", handler=read, usage="/demo go", summary="Go."),
        ),
    )
    assert cmd.read_only("SHOW INC-1") and cmd.read_only("") and cmd.read_only("fly")
    assert not cmd.read_only("go far")
    with pytest.raises(ValueError, match="background"):
        spec("x", handler=read, usage="/x", summary="X.", background=True, read_only=True)


def test_a_read_only_run_claims_before_its_first_effect_only():
    claims: list[bool] = []

    def claim(fresh: bool):
        return lambda: claims.append(fresh) or fresh

    ack = FakeAck()
    dispatch(invocation(claim=claim(True)), lambda i: Reply("pure read"), background=False, ack=ack)
    assert claims == [] and ack.calls[0]["text"] == "pure read"  # no effect: never claimed

    ran: list[str] = []

    def with_follow_up(i):
        i.defer("upload", lambda: ran.append("upload"))
        return Reply("answer")

    for fresh in (True, False):
        inv, ack = invocation(claim=claim(fresh)), FakeAck()
        dispatch(inv, with_follow_up, background=False, ack=ack)
        assert inv.runtime.background.wait_idle(2)
        answered = [{"text": "answer", "response_type": "ephemeral"}]
        assert ack.calls == (answered if fresh else [{}])
    assert claims == [True, False] and ran == ["upload"]  # the replay acted on nothing

    inv, ack = invocation(claim=claim(False)), FakeAck()
    dispatch(inv, lambda i: Reply("later"), background=True, ack=ack)
    assert inv.runtime.background.wait_idle(2)
    assert ack.calls == [{}] and inv.sent == []  # a replayed background run never starts
