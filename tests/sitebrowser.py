"""Headless Chromium driven by selenium, for the web leaderboard's tests and benchmark.

Uses the machine's own Chromium and chromedriver (Debian's ``chromium`` and ``chromium-driver``,
which .ci/run installs when absent): nothing is downloaded. The performance log records every
request the page makes, so a test can assert that it made none.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_paths() -> tuple[str, str] | None:
    """(browser, chromedriver) found on PATH, or None."""
    browser = next((p for p in map(shutil.which, BROWSERS) if p), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        return None
    return browser, driver


def missing_reason() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if chromium_paths() is None:
        return "no chromium and chromedriver on PATH (apt-get install chromium chromium-driver)"
    return None


def headless_chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium with a private profile and the performance log on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    if paths is None:
        raise RuntimeError(missing_reason())
    browser, driver = paths
    profile = tempfile.mkdtemp(prefix="harness-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    d._harness_profile = profile  # removed by close()
    return d


def close(driver) -> None:
    profile = getattr(driver, "_harness_profile", None)
    try:
        driver.quit()
    finally:
        if profile:
            shutil.rmtree(profile, ignore_errors=True)


def open_page(driver, page: Path, timeout_s: float = 60.0, chart: bool = True) -> dict:
    """Load a page from its file and wait until its script says the table is interactive and,
    with ``chart``, the chart beside it is drawn. Returns both moments in seconds from navigation
    start: {"interactive_s": ..., "chart_s": ...} (performance.now() at each)."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("performance")  # drop what earlier pages logged
    driver.get_log("browser")
    driver.get(Path(page).resolve().as_uri())
    flags = "ready" + (" chart" if chart else "")
    script = "return '%s'.split(' ').every(f => document.documentElement.dataset[f] === 'true')"
    WebDriverWait(driver, timeout_s).until(lambda d: d.execute_script(script % flags))
    times = driver.execute_script("return [window.harnessReadyMs, window.harnessChartMs]")
    return {
        "interactive_s": float(times[0]) / 1000,
        "chart_s": float(times[1]) / 1000 if chart else None,
    }


def requested_urls(driver) -> list[str]:
    """Every URL the browser asked for since the last call (page, scripts, images, XHR...)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message.get("method") == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls


def foreign_requests(urls: list[str], page: Path) -> list[str]:
    """The URLs that are neither the page's own file nor inline (data:, blob:, about:)."""
    own = Path(page).resolve().as_uri()
    return [
        u for u in urls if u.split("#")[0] != own and not u.startswith(("data:", "blob:", "about:"))
    ]


def severe_logs(driver) -> list[str]:
    """Console errors (script errors, CSP refusals) since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def in_ci() -> bool:
    return bool(os.environ.get("CI"))
