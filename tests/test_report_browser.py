"""The compliance report in a real headless Chromium: it fits a 1280 px screen without
horizontal scrolling, a narrow screen scrolls only inside a wide table's own box, and a
shortened hash opens (no script) to its full, selectable value.

Chromium must be installed (``apt-get install chromium``); the test fails, not skips, without it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright

from fedfort import Simulation
from fedfort.config import parse_config
from fedfort.monitoring.run_state import read_run
from fedfort.report import write_report
from test_dashboard_browser import CHROMIUM_ARGS, TIMEOUT_MS, chromium_path

pytestmark = pytest.mark.slow  # a training run and a browser: about ten seconds

#: the page's width and the widest table (its wrapper scrolls it) at each viewport width
_LAYOUT = """() => ({
  page: document.documentElement.scrollWidth,
  tables: [...document.querySelectorAll('.table-wrap')].map(
    (w) => ({scroll: w.scrollWidth, client: w.clientWidth})),
})"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "run"
    body: dict[str, Any] = {
        "rounds": 3,
        "data": {"dataset": "digits", "partition": "iid"},
        "model": {"name": "logreg"},
        "clients": {"count": 4, "epochs": 1, "batch_size": 0, "lr": 0.5},
        "simulation": {"workers": 0},
    }
    with Simulation(parse_config(body), out_dir=out) as sim:
        sim.run()
    return write_report(out)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _layout(browser: Browser, report: Path, width: int) -> dict[str, Any]:
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.goto(report.as_uri())
        layout: dict[str, Any] = page.evaluate(_LAYOUT)
        return layout
    finally:
        page.close()


def test_the_report_fits_1280_px_and_scrolls_only_inside_tables_when_narrow(
    browser: Browser, report: Path
) -> None:
    wide = _layout(browser, report, 1280)
    assert wide["page"] <= 1280
    assert wide["tables"] and all(t["scroll"] <= t["client"] for t in wide["tables"])
    narrow = _layout(browser, report, 400)
    assert narrow["page"] <= 400  # a wide table scrolls in its box, never the page


def test_a_shortened_hash_opens_to_its_full_value(browser: Browser, report: Path) -> None:
    sha = read_run(report.parent)["models"][-1]["sha256"]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(report.as_uri())
        cell = page.locator(f'details.digest:has(summary[title="{sha}"])').first
        assert re.fullmatch(r"[0-9a-f]{12}…", cell.inner_text().strip())
        width = cell.evaluate("(e) => e.closest('td').getBoundingClientRect().width")
        assert width < 200  # a 64-character hash would take three lines of a wide column
        cell.locator("summary").click()
        assert sha in cell.inner_text()
        full = cell.locator("code.full")
        assert full.is_visible()
        assert full.evaluate("(e) => getComputedStyle(e).userSelect") == "all"
    finally:
        page.close()
