"""Drive headless Chromium over the DevTools protocol (CDP) for the browser tests.

No WebDriver: Chromium is started with ``--remote-debugging-port=0``, the port
is read from ``DevToolsActivePort`` in its fresh profile folder, and a
websocket (the ``websockets`` package) speaks CDP to one page. The page's
network is switched off (``Network.emulateNetworkConditions`` offline) and every
request it makes is recorded, as are console messages, uncaught exceptions,
log entries and JavaScript dialogs (``alert``), so a test can check that a
report opened offline made no request, logged no error and ran no injected
script.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
)


def find_chromium() -> str | None:
    """Path of a Chromium executable, or ``None`` when there is none."""
    override = os.environ.get("CHROMIUM")
    if override:
        return override if shutil.which(override) else None
    for candidate in CHROMIUM_CANDIDATES:
        path = shutil.which(candidate)
        if path:
            return path
    return None


@dataclass
class PageLog:
    """What a page did: its requests, console messages, exceptions and dialogs."""

    requests: list[str] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_entries: list[tuple[str, str]] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def errors(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and error log entries."""
        found = [
            f"console.{kind}: {text}"
            for kind, text in self.console
            if kind in {"error", "warning", "assert"}
        ]
        found += [f"exception: {text}" for text in self.exceptions]
        found += [
            f"log {level}: {text}"
            for level, text in self.log_entries
            if level in {"error", "warning"}
        ]
        return found


class CDPError(RuntimeError):
    pass


class ChromiumPage:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(
        self, *, executable: str, profile: Path, width: int = 1280, height: int = 900
    ) -> None:
        self.executable = executable
        self.profile = profile
        self.width = width
        self.height = height
        self.log = PageLog()
        self._process: subprocess.Popen[bytes] | None = None
        self._ws: ClientConnection | None = None
        self._session: str | None = None
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    # -- lifecycle -------------------------------------------------------
    def __enter__(self) -> ChromiumPage:
        self.profile.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self._process.poll() is not None:
                raise CDPError(f"chromium exited with code {self._process.returncode} at start")
            if time.monotonic() > deadline:
                raise CDPError("chromium did not open its DevTools port within 30 s")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self._ws = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=10)
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
            self.call(method, session=True)
        self.call(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
            session=True,
        )
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._ws is not None:
                try:
                    self.call("Browser.close", timeout=5)
                except Exception:  # noqa: BLE001 - the browser may close before it answers
                    pass
                self._ws.close()
        finally:
            if self._process is not None:
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(timeout=10)

    # -- protocol --------------------------------------------------------
    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: bool = False,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """Send one CDP command and wait for its answer (recording events meanwhile)."""
        assert self._ws is not None
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        self._ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline, waiting_for=method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _receive(self, deadline: float, *, waiting_for: str) -> dict[str, Any]:
        assert self._ws is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CDPError(f"timed out waiting for {waiting_for}")
        try:
            message = json.loads(self._ws.recv(timeout=remaining))
        except TimeoutError as error:
            raise CDPError(f"timed out waiting for {waiting_for}") from error
        if "method" in message:
            self._record(message)
        return message

    def _record(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        method, params = event["method"], event.get("params", {})
        if method == "Network.requestWillBeSent":
            self.log.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
            )
            self.log.console.append((params.get("type", ""), text))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.log.exceptions.append(
                details.get("exception", {}).get("description") or details.get("text", "")
            )
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.log.log_entries.append((entry.get("level", ""), entry.get("text", "")))
        elif method == "Page.javascriptDialogOpening":
            self.log.dialogs.append(params.get("message", ""))
            # answer the dialog so the page is not blocked
            assert self._ws is not None
            self._next_id += 1
            self._ws.send(
                json.dumps(
                    {
                        "id": self._next_id,
                        "method": "Page.handleJavaScriptDialog",
                        "params": {"accept": True},
                        "sessionId": self._session,
                    }
                )
            )

    def wait_for_event(self, method: str, *, timeout: float = 30) -> dict[str, Any]:
        """Wait for the next event named ``method`` (one already seen counts once)."""
        for index, event in enumerate(self._events):
            if event["method"] == method:
                return self._events.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline, waiting_for=method)
            if message.get("method") == method:
                self._events.remove(message)
                return message

    # -- page helpers ----------------------------------------------------
    def open(self, url: str, *, timeout: float = 30) -> None:
        """Navigate and wait for the load event."""
        self._events.clear()
        self.call("Page.navigate", {"url": url}, session=True)
        self.wait_for_event("Page.loadEventFired", timeout=timeout)

    def evaluate(self, expression: str, *, timeout: float = 30) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=True,
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise CDPError(f"evaluate {expression!r}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_until(self, expression: str, *, timeout: float = 30, interval: float = 0.05) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise CDPError(f"timed out after {timeout} s waiting for {expression!r}")
            time.sleep(interval)

    def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        """Save a PNG screenshot (the whole page by default)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.call("Page.getLayoutMetrics", session=True)
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": self.width,
                "height": min(int(size["height"]), 16_000),
                "scale": 1,
            }
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", params, session=True, timeout=60)["data"]
        path.write_bytes(base64.b64decode(data))
        return path
