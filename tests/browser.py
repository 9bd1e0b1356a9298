"""A real headless browser for the report tests: Chromium driven over the DevTools protocol.

Chromium is started with ``--remote-debugging-pipe`` (commands on its fd 3, replies and events on
its fd 4, each a JSON message ended by a NUL byte), so no port, no websocket library and no
browser download are needed: Debian's ``chromium`` package is enough (``.ci/run`` installs it).
``open_page`` loads a file, waits for its load event, and returns what the page showed: the
console messages, exceptions and log entries (errors among them: a blocked script, a refused
resource), and the values of a JavaScript expression evaluated in it.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
REQUIRE_ENV = "ZOO_REQUIRE_BROWSER"  # .ci/run sets it once it has installed chromium


def find_browser() -> str | None:
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    def __init__(self, executable: str, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="zoo-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The protocol wants fds 3 (commands) and 4 (replies). Copies above 10 first, so that
        # putting one at 3 cannot overwrite the other; dup2's copies are inherited, the rest not.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser_r, from_browser_w)]
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)

        def wire_pipes():  # in the child, before exec
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=wire_pipes,
        )
        for fd in ends:
            os.close(fd)
        self._buffer, self._next_id, self.events = b"", 0, []

    # -- the protocol -----------------------------------------------------------------------------

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str | None = None) -> dict:
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._receive()
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(left, 0))
            if not ready:
                raise TimeoutError("the browser did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser closed its pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    # -- pages ------------------------------------------------------------------------------------

    def open_page(self, path: Path, expression: str) -> dict:
        """Load ``path``, wait for its load event, evaluate ``expression`` (awaiting a promise)
        and return ``{"value": ..., "errors": [...], "messages": [...]}``."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=session)
        self.wait_for("Page.loadEventFired", session)
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session=session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"the test's expression failed: {result['exceptionDetails']}")
        self.send("Target.closeTarget", {"targetId": target})
        errors, messages = [], []
        for event in self.events:
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                messages.append(f"console.{params.get('type')}: {text}")
                if params.get("type") in ("error", "assert"):
                    errors.append(messages[-1])
            elif method == "Runtime.exceptionThrown":
                errors.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                messages.append(f"log.{entry.get('level')}: {entry.get('text')}")
                if entry.get("level") == "error":
                    errors.append(messages[-1])
        return {"value": result["result"].get("value"), "errors": errors, "messages": messages}

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - it may close its pipe before answering
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)


# What the tests read from a report page, in the page itself.
PAGE_FACTS = """
(async () => {
  const images = await Promise.all([...document.images].map(img =>
    img.decode().then(() => ({ok: img.naturalWidth > 0 && img.naturalHeight > 0,
                               width: img.naturalWidth, height: img.naturalHeight}),
                      e => ({ok: false, error: String(e)}))));
  const numbers = [...document.querySelectorAll('[data-metric]')].map(e =>
    ({key: e.dataset.metric, run: e.dataset.run === undefined ? null : Number(e.dataset.run),
      text: e.textContent}));
  return {images, numbers, title: document.title, scripts: document.scripts.length,
          svgs: document.querySelectorAll('svg').length,
          polylines: document.querySelectorAll('svg polyline').length,
          text: document.body.innerText};
})()
"""
