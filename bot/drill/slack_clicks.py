"""The drill's Slack hands: signed slash commands and button clicks dispatched into the real
Bolt app, as Slack would send them.

A mixin of `bot.drill.runner.Drill` (it uses the drill's `say` and `response_url`).
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any
from urllib.parse import urlencode

SIGNING_SECRET = "drill-signing-secret"
CHANNEL = "C0DRILLINC"


class SlackClicks:
    say: Any
    response_url: str

    # -- Slack interactions ---------------------------------------------------------------------

    def _dispatch(self, app: Any, body: str, content_type: str) -> Any:
        from slack_bolt.request import BoltRequest
        from slack_sdk.signature import SignatureVerifier

        ts = str(int(time.time()))
        sig = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=ts, body=body)
        headers = {
            "content-type": [content_type],
            "x-slack-request-timestamp": [ts],
            "x-slack-signature": [sig],
        }
        return app.dispatch(BoltRequest(body=body, headers=headers))

    def _slash(self, app: Any, command: str, text: str, user: str) -> None:
        self.say(f"  {user} types: {command} {text}")
        body = urlencode(
            {
                "token": "drill",
                "team_id": "T0DRILL",
                "team_domain": "drill",
                "channel_id": CHANNEL,
                "channel_name": "incidents",
                "user_id": user,
                "user_name": user.lower(),
                "command": command,
                "text": text,
                "api_app_id": "A0DRILL",
                "response_url": self.response_url,
                "trigger_id": "drill.trigger",
            }
        )
        resp = self._dispatch(app, body, "application/x-www-form-urlencoded")
        if resp.status != 200:
            self.say(f"  (Slack would show an error: HTTP {resp.status})")
        elif resp.body:
            with contextlib.suppress(ValueError):
                data = json.loads(resp.body)
                self.say(f"  (only visible to {user}) {str(data.get('text', ''))[:300]}")

    def _click(self, app: Any, msg: Any, button: dict[str, Any], user: str) -> None:
        self.say(f"  {user} clicks [{button.get('text', {}).get('text', '?')}]")
        payload = {
            "type": "block_actions",
            "team": {"id": "T0DRILL", "domain": "drill"},
            "user": {"id": user, "username": user.lower(), "team_id": "T0DRILL"},
            "api_app_id": "A0DRILL",
            "token": "drill",
            "container": {"type": "message", "message_ts": msg.ts, "channel_id": msg.channel},
            "trigger_id": "drill.trigger",
            "channel": {"id": msg.channel, "name": "incidents"},
            "message": {"ts": msg.ts, "text": msg.text, "blocks": msg.blocks},
            "response_url": self.response_url,
            "actions": [
                {
                    "action_id": button["action_id"],
                    "block_id": button.get("block_id", "b"),
                    "text": button.get("text"),
                    "value": button.get("value", ""),
                    "type": "button",
                    "action_ts": str(time.time()),
                }
            ],
        }
        resp = self._dispatch(
            app, urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"
        )
        if resp.status != 200:
            self.say(f"  (the click failed: HTTP {resp.status} {resp.body[:200]})")
