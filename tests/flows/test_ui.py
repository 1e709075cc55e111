"""The Prefect UI shows each run's reports: a real headless Chromium, driven over the DevTools
protocol, opens the demo run's Artifacts tab on the real server, the label-space table and the
label-space picture. Screenshots are kept under ``$PROLAB_TEST_OUTPUT`` (default
``tests/.artifacts/``) for the CI log."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import PROJECT_ROOT
from tests.helpers.prefect_runs import DemoRun

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1600", "--remote-debugging-port=0")
WAIT_S = 30.0


class Page:
    """One Chromium tab over the DevTools protocol: navigate, evaluate JavaScript, screenshot."""

    def __init__(self, websocket_url: str) -> None:
        from websockets.sync.client import connect

        self.socket = connect(websocket_url, max_size=None, open_timeout=WAIT_S)
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:  # events arrive in between; the answer carries our id
            message = json.loads(self.socket.recv(timeout=WAIT_S))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str) -> Any:
        """The first truthy value of ``expression``: the UI renders after its API calls return."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if value := self.evaluate(expression):
                return value
            time.sleep(0.25)
        raise AssertionError(f"the page never showed {what} ({self.evaluate('location.href')})")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/setup.sh --test installs Debian's package)")
    profile = tmp_path / "profile"
    process = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + WAIT_S
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert process.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=WAIT_S) as response:
            target = next(t for t in json.load(response) if t["type"] == "page")
        tab = Page(target["webSocketDebuggerUrl"])
        yield tab
        tab.socket.close()
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def screenshots() -> Path:
    directory = Path(os.environ.get("PROLAB_TEST_OUTPUT") or PROJECT_ROOT / "tests" / ".artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="ui-", dir=directory))


ARTIFACTS_TAB = """(() => { const tab = [...document.querySelectorAll('li.p-tab')]
    .find(t => t.textContent.trim() === 'Artifacts'); if (tab) tab.click(); return !!tab })()"""
ARTIFACT_LINKS = """(() => { const links = Object.fromEntries([...document.querySelectorAll('.artifact-card__title')]
    .map(title => [title.textContent.trim(), title.closest('a') && title.closest('a').href]));
    return 'label-space-matrix' in links ? links : null })()"""
TABLE = """(() => { const table = document.querySelector('table');
    return table && table.rows.length > 1 ? [...table.rows].map(row => [...row.cells].map(c => c.innerText)) : null
    })()"""
LOADED_IMAGES = """[...document.images]
    .filter(i => i.complete && i.naturalWidth > 0 && i.src.startsWith('data:image/png')).map(i => i.naturalWidth)"""


def test_a_person_browses_the_label_space_of_a_run_in_the_prefect_ui(demo_run: DemoRun, page: Page,
                                                                       screenshots: Path) -> None:
    ui = demo_run.env["PREFECT_API_URL"].removesuffix("/api")
    page.open(f"{ui}/runs/flow-run/{demo_run.flow_run_id}")
    page.wait_for(ARTIFACTS_TAB, "the Artifacts tab")
    links = page.wait_for(ARTIFACT_LINKS, "the run's artifact cards")
    page.screenshot(screenshots / "1-run-artifacts.png")
    assert {"describe", "embed", "label-space", "label-space-matrix", "train", "train-curves", "evaluate"} <= set(links)

    page.open(links["label-space"])
    rows = page.wait_for(TABLE, "the label-space table")
    page.screenshot(screenshots / "2-label-space-table.png")
    assert rows[0][:4] == ["property", "name", "descriptions", "classes"]
    assert len(rows) == 1 + demo_run.params["label_space"]["cluster"]["k"]

    page.open(links["label-space-matrix"])
    widths = page.wait_for(LOADED_IMAGES, "the class x property picture, loaded")
    page.screenshot(screenshots / "3-label-space-matrix.png")
    assert widths[0] > 100
