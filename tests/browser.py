"""A headless Chromium driven over the W3C WebDriver protocol (Debian's chromium and
chromium-driver, which .ci/run installs), with plain HTTP calls to chromedriver: no browser
download, no extra Python package."""

from __future__ import annotations

import base64
import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

CHROMIUM = "/usr/bin/chromium"
INSTALL = "apt-get install chromium chromium-driver (.ci/run installs them)"


class Browser:
    def __init__(self, *, width: int = 1280, height: int = 1000) -> None:
        driver = shutil.which("chromedriver")
        if driver is None or not Path(CHROMIUM).exists():
            raise RuntimeError(f"no headless Chromium on this machine: {INSTALL}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [driver, f"--port={port}", "--allowed-ips=127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{port}"
        self.session_id: str | None = None
        try:
            self._wait_ready()
            caps = {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    # root in CI: Chromium's sandbox needs user namespaces it cannot have there
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        f"--window-size={width},{height}",
                    ],
                },
            }
            value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
            self.session_id = value["sessionId"]
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/status", timeout=1).json()["value"]["ready"]:
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.1)
        raise RuntimeError("chromedriver did not become ready in 20 s")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = requests.request(method, f"{self.base}{path}", json=body, timeout=60)
        payload = response.json()
        if response.status_code != 200:
            raise RuntimeError(f"WebDriver {method} {path}: {payload.get('value')}")
        return payload["value"]

    def _session(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call(method, f"/session/{self.session_id}{path}", body)

    def open(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """Run `script` (a function body; `arguments` holds `args`) in the page."""
        return self._session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def resize(self, width: int, height: int) -> None:
        self._session("POST", "/window/rect", {"width": width, "height": height})

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(self._session("GET", "/screenshot"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def close(self) -> None:
        if self.session_id is not None:
            # The browser may already be gone; chromedriver is stopped next either way.
            with contextlib.suppress(requests.RequestException, RuntimeError):
                self._session("DELETE", "")
            self.session_id = None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
