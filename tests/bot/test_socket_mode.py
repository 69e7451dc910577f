"""Socket Mode: with SLACK_APP_TOKEN set, `run` connects over a WebSocket (the fake's) and
handles the same commands, acknowledging each envelope."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import create_engine, text

from bot.server import serve
from bot.settings import load_settings
from storage.migrate import upgrade
from tests.bot.conftest import TOKEN, write_config
from tests.slack_fake import FakeSlack
from tests.slack_signing import slash_command_body


def test_socket_mode_handles_commands_and_shuts_down(tmp_path: Path, fake_slack: FakeSlack):
    db_url = f"sqlite:///{tmp_path / 'socket.db'}"
    upgrade(db_url)
    settings = load_settings(
        {
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_APP_TOKEN": "xapp-1-A111-test",
            "INCIDENT_BOT_SLACK_API_URL": fake_slack.base_url,
            "DATABASE_URL": db_url,
            "INCIDENT_BOT_CONFIG": str(write_config(tmp_path / "socket.yml", {})),
        }
    )
    stop = threading.Event()
    from bot import server

    thread = threading.Thread(
        target=server.serve_socket_mode, args=(settings,), kwargs={"stop": stop}, daemon=True
    )
    thread.start()
    try:
        fake_slack.wait_for_socket(timeout=15)
        opened = fake_slack.wait_for("apps.connections.open")
        assert opened.headers["authorization"] == "Bearer xapp-1-A111-test"

        from urllib.parse import parse_qsl

        def command(text_: str) -> dict:
            return dict(
                parse_qsl(
                    slash_command_body(
                        "/incident", text_, response_url=fake_slack.response_url("socket")
                    )
                )
            )

        env = fake_slack.socket_send({"type": "slash_commands", "payload": command("help")})
        ack = fake_slack.wait_for("socket_ack", lambda c: c.args.get("envelope_id") == env)
        assert "/incident open" in ack.args["payload"]["text"]

        env = fake_slack.socket_send(
            {"type": "slash_commands", "payload": command("open Socket mode incident")}
        )
        fake_slack.wait_for("socket_ack", lambda c: c.args.get("envelope_id") == env)
        card = fake_slack.wait_for("chat.postMessage", lambda c: "blocks" in c.args, timeout=10)
        assert "INC-1" in card.args["text"]
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incidents")).scalar_one() == 1
    engine.dispose()


def test_serve_picks_socket_mode_when_app_token_is_set(monkeypatch, tmp_path, fake_slack):
    picked: list[str] = []
    from bot import server

    monkeypatch.setattr(server, "serve_socket_mode", lambda s: picked.append("socket"))
    monkeypatch.setattr(server, "serve_http", lambda s, **kw: picked.append("http"))
    base = {
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": "s",
        "INCIDENT_BOT_SLACK_API_URL": fake_slack.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
    }
    serve(settings=load_settings({**base, "SLACK_APP_TOKEN": "xapp-1"}), host="h", port=1)
    serve(settings=load_settings(base), host="h", port=1)
    serve(
        settings=load_settings({**base, "SLACK_APP_TOKEN": "xapp-1"}),
        force_http=True,
        host="h",
        port=1,
    )
    assert picked == ["socket", "http", "http"]
