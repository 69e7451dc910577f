"""A local stand-in for the Slack Web API that renders what the bot posts to a terminal.

The drill runs the real bot: its WebClient points here instead of slack.com. Every message
is stored (so the simulated responder can find the buttons to click) and printed as it
would read in Slack; card updates print only the lines that changed, which gives a live
progress display while containment runs.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qs

_MENTION = re.compile(r"<([@#!])([^>|]+)(?:\|([^>]+))?>")
_LINK = re.compile(r"<(https?://[^>|]+)\|([^>]+)>")


def mrkdwn_to_text(text: str) -> str:
    """Slack mrkdwn as a terminal shows it: mentions as @U.., links as label (url)."""
    text = _LINK.sub(r"\2 (\1)", text)
    text = _MENTION.sub(
        lambda m: f"{'@' if m.group(1) != '#' else '#'}{m.group(3) or m.group(2)}", text
    )
    return html.unescape(text).replace("*", "")


def rich_text_to_text(block: dict[str, Any]) -> str:
    """A rich_text block as a terminal shows it: its text elements as they are, users as @U.."""
    out = []
    for part in block.get("elements") or []:
        for element in part.get("elements") or []:
            if element.get("type") == "user":
                out.append(f"@{element.get('user_id', '')}")
            else:
                out.append(str(element.get("text", "")))
    return "".join(out)


def _text(obj: Any) -> str:
    if isinstance(obj, dict):
        return mrkdwn_to_text(str(obj.get("text", "")))
    return ""


def render_blocks(blocks: list[dict[str, Any]], fallback: str = "") -> list[str]:
    """Block Kit as plain lines."""
    if not blocks:
        return [mrkdwn_to_text(fallback)] if fallback else []
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            lines.append(f"== {_text(block.get('text'))} ==")
        elif kind == "section":
            if block.get("text"):
                lines.extend(_text(block["text"]).splitlines())
            for f in block.get("fields") or []:
                lines.append("  " + " ".join(_text(f).splitlines()))
            acc = block.get("accessory")
            if isinstance(acc, dict) and acc.get("type") == "button":
                lines.append(f"  [ {_text(acc.get('text'))} ]")
        elif kind == "context":
            parts = [_text(e) for e in block.get("elements", []) if e.get("type") != "image"]
            lines.append("  " + " · ".join(p for p in parts if p))
        elif kind == "actions":
            buttons = [
                f"[ {_text(e.get('text'))} ]" for e in block.get("elements", []) if "text" in e
            ]
            lines.append("  " + "  ".join(buttons))
        elif kind == "divider":
            lines.append("  " + "─" * 40)
        elif kind == "rich_text":
            lines.extend(rich_text_to_text(block).splitlines())
    return lines


def thread_title(lines: list[str], width: int = 60) -> str:
    """A parent message's first line, short: what a thread is labelled by."""
    first = next((line.strip() for line in lines if line.strip()), "")
    first = first.removeprefix("==").removesuffix("==").strip()
    return first if len(first) <= width else first[: width - 1] + "…"


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    history: list[list[str]] = field(default_factory=list)


class ConsoleSlack:
    """A threaded HTTP server on 127.0.0.1 answering the Web API methods the bot calls."""

    def __init__(self, out: TextIO, *, users: dict[str, str] | None = None) -> None:
        self.out = out
        self.users = users or {}
        self.messages: dict[tuple[str, str], Message] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.RLock()
        self._ts = itertools.count(1)
        self._channels = itertools.count(1)
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api/"

    def __enter__(self) -> ConsoleSlack:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- what the drill inspects ---------------------------------------------------------

    def find_button(self, action_id: str) -> tuple[Message, dict[str, Any]] | None:
        with self._lock:
            for msg in reversed(list(self.messages.values())):
                for block in msg.blocks:
                    for el in block.get("elements", []) if block.get("type") == "actions" else []:
                        if el.get("action_id") == action_id:
                            return msg, el
        return None

    def count(self, method: str) -> int:
        with self._lock:
            return sum(1 for m, _ in self.calls if m == method)

    # -- the Web API ---------------------------------------------------------------------

    def _print(self, lines: list[str], prefix: str) -> None:
        with self._lock:
            for line in lines:
                self.out.write(f"{prefix}{line}\n")
            self.out.flush()

    def _name(self, channel: str) -> str:
        return f"#{channel}"

    def _where(self, channel: str, thread_ts: str | None) -> str:
        """The channel, or the thread named by its parent message (a card's title)."""
        if not thread_ts:
            return self._name(channel)
        with self._lock:
            parent = self.messages.get((channel, thread_ts))
        title = thread_title(parent.history[0] if parent and parent.history else [])
        return f'{self._name(channel)}, thread of "{title}"' if title else "a thread"

    def handle(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.calls.append((method, args))
        for listener in self.listeners:
            listener(method, args)
        if method == "auth.test":
            return {
                "ok": True,
                "user_id": "U0INCIDENTBOT",
                "bot_id": "B0INCIDENTBOT",
                "team_id": "T0DRILL",
                "user": "incident-bot",
            }
        if method == "response":  # a response_url post: the user's ephemeral answer
            self._print(
                [
                    "(only visible to you)",
                    *render_blocks(
                        _json_arg(args.get("blocks")) or [], str(args.get("text") or "")
                    ),
                ],
                "  │ ",
            )
            return {"ok": True}
        if method in ("chat.postMessage", "chat.postEphemeral"):
            return self._post(method, args)
        if method == "chat.update":
            return self._update(args)
        if method == "conversations.create":
            cid = f"C0DRILL{next(self._channels):03d}"
            self._print([f"(channel #{args.get('name')} created)"], "  ")
            return {"ok": True, "channel": {"id": cid, "name": args.get("name")}}
        if method == "users.info":
            uid = args.get("user", "")
            return {"ok": True, "user": {"id": uid, "name": self.users.get(uid, uid)}}
        if method == "files.getUploadURLExternal":
            return {"ok": True, "upload_url": self.url + "upload", "file_id": "F0DRILL"}
        if method == "files.completeUploadExternal":
            self._print(["(file uploaded: " + str(args.get("files"))[:120] + ")"], "  ")
            return {"ok": True, "files": [{"id": "F0DRILL"}]}
        return {"ok": True}

    def _post(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel"))
        ts = f"{1_700_000_000 + next(self._ts)}.000100"
        blocks = _json_arg(args.get("blocks")) or []
        msg = Message(channel, ts, str(args.get("text") or ""), blocks, args.get("thread_ts"))
        lines = render_blocks(blocks, msg.text)
        msg.history.append(lines)
        with self._lock:
            self.messages[(channel, ts)] = msg
        where = self._where(channel, msg.thread_ts)
        who = " (only visible to you)" if method == "chat.postEphemeral" else ""
        self._print([f"┌ incident-bot in {where}{who}"], "")
        self._print(lines, "│ ")
        self._print(["└"], "")
        return {"ok": True, "channel": channel, "ts": ts, "message": {"ts": ts, "text": msg.text}}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel")), str(args.get("ts"))
        with self._lock:
            msg = self.messages.get((channel, ts))
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        blocks = _json_arg(args.get("blocks")) or []
        lines = render_blocks(blocks, str(args.get("text") or ""))
        previous = set(msg.history[-1]) if msg.history else set()
        changed = [line for line in lines if line not in previous]
        with self._lock:
            msg.blocks, msg.text = blocks, str(args.get("text") or msg.text)
            msg.history.append(lines)
        if changed:
            self._print(changed, "  ↻ ")
        return {"ok": True, "channel": channel, "ts": ts}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        console = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the transcript clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                method = self.path.rsplit("/", 1)[-1]
                ctype = self.headers.get("Content-Type", "")
                args: dict[str, Any]
                if "json" in ctype:
                    args = json.loads(raw or b"{}")
                elif "x-www-form-urlencoded" in ctype:
                    args = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                else:
                    args = {}
                body = json.dumps(console.handle(method, args)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def _json_arg(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value
