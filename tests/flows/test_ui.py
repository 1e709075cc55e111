"""The Prefect UI shows each run's reports: Playwright drives the system's headless Chromium (no
browser download) to the demo run's Artifacts tab on the real server, the label-space table and
the label-space picture. Screenshots are kept under ``$PROLAB_TEST_OUTPUT`` (default
``tests/.artifacts/``) for the CI log."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import PROJECT_ROOT
from tests.helpers.prefect_runs import DemoRun

# Debian's chromium (scripts/setup.sh --test installs it); checked before the demo run is made.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="chromium is not installed (scripts/setup.sh --test installs Debian's package)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
Page = sync_api.Page
WAIT_MS = 30_000


@pytest.fixture
def page() -> Iterator[Page]:
    """A headless tab of the system's Chromium."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1600})
            tab.set_default_timeout(WAIT_MS)
            yield tab
        finally:
            browser.close()


def wait_for(page: Page, expression: str, what: str) -> Any:
    """The first truthy value of ``expression``: the UI renders after its API calls return."""
    try:
        return page.wait_for_function(expression, polling=250).json_value()
    except sync_api.TimeoutError:
        raise AssertionError(f"the page never showed {what} ({page.url})") from None


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
LOADED_IMAGES = """(() => { const widths = [...document.images]
    .filter(i => i.complete && i.naturalWidth > 0 && i.src.startsWith('data:image/png')).map(i => i.naturalWidth);
    return widths.length ? widths : null })()"""


def test_a_person_browses_the_label_space_of_a_run_in_the_prefect_ui(demo_run: DemoRun, page: Page,
                                                                       screenshots: Path) -> None:
    ui = demo_run.env["PREFECT_API_URL"].removesuffix("/api")
    page.goto(f"{ui}/runs/flow-run/{demo_run.flow_run_id}")
    wait_for(page, ARTIFACTS_TAB, "the Artifacts tab")
    links = wait_for(page, ARTIFACT_LINKS, "the run's artifact cards")
    page.screenshot(path=screenshots / "1-run-artifacts.png")
    assert {"describe", "embed", "label-space", "label-space-matrix", "train", "train-curves", "evaluate"} <= set(links)

    page.goto(links["label-space"])
    rows = wait_for(page, TABLE, "the label-space table")
    page.screenshot(path=screenshots / "2-label-space-table.png")
    assert rows[0][:4] == ["property", "name", "descriptions", "classes"]
    assert len(rows) == 1 + demo_run.params["label_space"]["cluster"]["k"]

    page.goto(links["label-space-matrix"])
    widths = wait_for(page, LOADED_IMAGES, "the class x property picture, loaded")
    page.screenshot(path=screenshots / "3-label-space-matrix.png")
    assert widths[0] > 100
