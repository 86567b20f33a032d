"""The scheduler's live dashboard in a real headless Chromium: a local cluster runs a windowed
stream (the YSB demo's), the page plots its batches and windows as they come and lists every
executor, with no script error and nothing refused by its Content-Security-Policy. A screenshot
is saved (its path printed). And a scheduler whose dashboard port is taken runs on without one.

The browser test needs Debian's chromium and chromium-driver (.ci/run installs them) and selenium
(the dev extra); it is skipped with the reason when one is missing. Selenium is given the driver
and the browser, so it never downloads either.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from squall import LocalCluster, ysb
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
EXECUTORS = 3


def missing_browser() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found (Debian package {package})"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager, should anything call it, fetches nothing
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1660"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_dashboard_plots_a_running_stream_and_lists_every_executor(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    with LocalCluster(executors=EXECUTORS, settings=fast_settings()) as cluster, cluster.connect() as ctx:
        assert cluster.dashboard_url.startswith("http://127.0.0.1:")
        windows: list[ysb.WindowResult] = []
        stream = ysb.ysb_stream(ctx, rate=5000, window=1.0, batch_interval=0.1, results=windows)
        try:
            browser.get(cluster.dashboard_url)

            def points(chart: str) -> int:
                found = browser.find_elements(By.CSS_SELECTOR, f'[data-chart="{chart}"]')
                return int(found[0].get_attribute("data-points")) if found else 0

            wait_until(lambda: points("batch_duration") >= 3, timeout=30, interval=0.2,
                       what="the batch-duration chart to hold 3 points")
            wait_until(lambda: points("input_rate") >= 3, timeout=10, interval=0.2, what="the input-rate chart to hold 3 points")
            listed = {cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#executors-table tbody td:first-child")}
            assert listed == set(cluster.executor_names()) and len(listed) == EXECUTORS
            assert browser.find_element(By.CSS_SELECTOR, ".stream h3").text.startswith("stream ")
            # A picture worth keeping: a few seconds of batches and some closed windows.
            wait_until(lambda: points("window_latency") >= 3 and points("batch_duration") >= 30, timeout=30, interval=0.2,
                       what="three closed windows and 30 batches on the charts")
            # The rate source cannot tell a lag: the source-lag chart is left out, not drawn empty.
            assert not browser.find_element(By.CSS_SELECTOR, '[data-chart="source_lag"]').is_displayed()
            errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
            assert not errors, errors  # no script error, nothing the Content-Security-Policy refused
            screenshot = tmp_path / "dashboard.png"
            assert browser.save_screenshot(str(screenshot))
            print(f"dashboard screenshot: {screenshot}")
        finally:
            stream.stop(timeout=20)


def test_a_scheduler_that_cannot_serve_its_dashboard_says_so_and_runs_on() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with LocalCluster(executors=1, settings=fast_settings(dashboard_port=port)) as cluster, cluster.connect() as ctx:
            assert cluster.dashboard_url == ""
            assert ctx.range(100, partitions=2).count() == 100
            log = cluster.log_text("scheduler")
            assert "dashboard_unavailable" in log and "SQUALL_DASHBOARD_PORT" in log, log[-2000:]
