"""The web leaderboard in a real browser: headless Chromium opens the page from its file.

Filters change the rows, headers sort, a model opens its detail view, the charts and the history
are drawn by plotly, and the page makes no network request. Skipped where no Chromium is
installed, except in CI (CI=1), where .ci/run installs it and a missing browser is a failure.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from fakeruns import command_case, infer_case, standard_cases, write_run
from sitebrowser import (
    close,
    foreign_requests,
    headless_chromium,
    in_ci,
    missing_reason,
    open_page,
    requested_urls,
    severe_logs,
)
from sitekit import add_serving, add_warning, nightly_runs

from harness.report.recommend import pareto_mask
from harness.report.site import build_site

pytest.importorskip("plotly")
_why = missing_reason()
if _why and in_ci():
    raise RuntimeError(f"CI must run the browser tests: {_why}")
pytestmark = [
    pytest.mark.skipif(_why is not None, reason=str(_why)),
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def driver():
    d = headless_chromium()
    try:
        yield d
    finally:
        close(d)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """One page of a single run (2 models, measured) and one of three nightly runs."""
    root = tmp_path_factory.mktemp("site")
    single = write_run(
        root / "single",
        standard_cases()
        + [infer_case("tiny-e", "fp32", "cpu", 8, 0.05, params=2e6, method="estimated")],
    )
    add_serving(single, "tiny-s", "fp32", {1: [3.0, 3.1, 2.9], 4: [1.5, 1.6, 1.4], 16: [0.9] * 3})
    add_warning(
        single, "tiny-l", "int8", "cpu:0: counter reset inside the window; energy after it only"
    )
    nightly_runs(root / "nightly")
    return {
        "single": build_site([single], root / "single-site"),
        "nightly": build_site([root / "nightly"], root / "nightly-site"),
    }


def by_css(d, css):
    return d.find_elements("css selector", css)


def board_models(d) -> list[str]:
    return [tr.get_attribute("data-model") for tr in by_css(d, "#leaderboard tbody tr")]


def column_values(d, key: str) -> list[float | None]:
    cells = by_css(d, f"#leaderboard tbody td[data-key='{key}']")
    return [float(v) if (v := c.get_attribute("data-value")) is not None else None for c in cells]


def type_into(d, element_id: str, text: str) -> None:
    """Replace a box's text by keystrokes, as a person would (each fires an input event)."""
    from selenium.webdriver.common.keys import Keys

    box = d.find_element("id", element_id)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    if text:
        box.send_keys(text)


def test_opens_from_file_and_makes_no_network_request(driver, pages):
    page = pages["single"]
    open_page(driver, page)
    # visit every view, so that whatever they load is loaded
    for tab in ("charts", "compare", "history", "measured", "board"):
        by_css(driver, f"#tabs button[data-tab='{tab}']")[0].click()
    by_css(driver, "#leaderboard button.model")[0].click()
    urls = requested_urls(driver)
    assert page.resolve().as_uri() in urls, "the log records requests (the page itself)"
    assert foreign_requests(urls, page) == []
    assert severe_logs(driver) == []


def test_the_request_check_would_see_a_request(driver, tmp_path):
    # the same check on a page that does fetch something (nothing listens on port 9)
    page = tmp_path / "leaky.html"
    page.write_text(
        "<html><body><img src='http://127.0.0.1:9/x.png'>"
        "<script>document.documentElement.dataset.ready='true';window.harnessReadyMs=1</script>"
        "</body></html>"
    )
    open_page(driver, page, chart=False)
    assert foreign_requests(requested_urls(driver), page) == ["http://127.0.0.1:9/x.png"]


def test_accuracy_filter_changes_the_rows(driver, pages):
    open_page(driver, pages["single"])
    assert sorted(board_models(driver)) == ["tiny-l", "tiny-s"]
    # tiny-l's cheapest setup (int8, accuracy 0.75) until the target excludes it
    row = by_css(driver, "#leaderboard tbody tr[data-model='tiny-l'] td[data-key='best_setup']")
    assert row[0].text == "int8 / cpu"
    type_into(driver, "f-min-accuracy", "0.78")
    assert board_models(driver) == ["tiny-l"]
    row = by_css(driver, "#leaderboard tbody tr[data-model='tiny-l'] td[data-key='best_setup']")
    assert row[0].text == "fp32 / cpu"
    assert column_values(driver, "accuracy") == [pytest.approx(0.8)]
    type_into(driver, "f-min-accuracy", "0.9")
    assert board_models(driver) == []
    assert "0 of 2 models" in driver.find_element("id", "board-count").text


def test_latency_and_hardware_filters(driver, pages):
    open_page(driver, pages["single"])
    # the headline setups (batch 8) of the fake runs have a TTFT of 0.08 s
    type_into(driver, "f-max-latency", "0.05")
    assert board_models(driver) == []
    type_into(driver, "f-max-latency", "0.1")
    assert sorted(board_models(driver)) == ["tiny-l", "tiny-s"]
    # p90 latency: the fake runs record none, so no setup is known to meet a maximum
    driver.find_element("css selector", "#f-latency-metric option[value='latency_p90_s']").click()
    assert board_models(driver) == []
    type_into(driver, "f-max-latency", "")
    assert len(board_models(driver)) == 2
    driver.find_element("css selector", "#f-hardware input[value='cpu']").click()
    assert board_models(driver) == []


def test_a_run_without_models_still_opens(driver, tmp_path):
    run = write_run(tmp_path / "results", [command_case("script", "cpu", [5.0, 6.0])])
    page = build_site([run], tmp_path / "site")
    open_page(driver, page)
    by_css(driver, "#tabs button[data-tab='charts']")[0].click()
    # no serving in this run: the chart says so instead of drawing nothing
    assert "no serving case" in driver.find_element("id", "chart-serving").text
    for tab in ("compare", "history", "measured", "board"):
        by_css(driver, f"#tabs button[data-tab='{tab}']")[0].click()
    assert severe_logs(driver) == []
    assert "no model setup to rank" in driver.find_element("id", "board-count").text


def test_energy_methods_are_never_ranked_together(driver, pages):
    open_page(driver, pages["single"])
    assert "tiny-e" not in board_models(driver), "the default ranking is the measured one"
    method = driver.find_element("id", "f-method")
    method.find_element("css selector", "option[value='estimated']").click()
    assert board_models(driver) == ["tiny-e"]
    methods = {c.text for c in by_css(driver, "#leaderboard tbody td[data-key='energy_method']")}
    assert methods == {"estimated"}


def test_sorting_a_column(driver, pages):
    open_page(driver, pages["single"])
    header = by_css(driver, "#leaderboard th[data-sort='energy_per_query_j']")[0]
    assert header.get_attribute("aria-sort") == "ascending"
    values = column_values(driver, "energy_per_query_j")
    assert values == sorted(values) and len(values) == 2
    header.click()
    header = by_css(driver, "#leaderboard th[data-sort='energy_per_query_j']")[0]
    assert header.get_attribute("aria-sort") == "descending"
    assert column_values(driver, "energy_per_query_j") == sorted(values, reverse=True)
    by_css(driver, "#leaderboard th[data-sort='model']")[0].click()
    assert board_models(driver) == ["tiny-l", "tiny-s"]
    by_css(driver, "#leaderboard th[data-sort='model']")[0].click()
    assert board_models(driver) == ["tiny-s", "tiny-l"]
    ranks = [c.text for c in by_css(driver, "#leaderboard tbody td[data-key='rank']")]
    assert ranks == ["1", "2"]


def test_search_box(driver, pages):
    open_page(driver, pages["single"])
    type_into(driver, "f-search", "TINY-S")
    assert board_models(driver) == ["tiny-s"]
    type_into(driver, "f-search", "int8")
    assert sorted(board_models(driver)) == ["tiny-l", "tiny-s"]


def test_detail_view_lists_every_setup_and_its_label(driver, pages, tmp_path):
    open_page(driver, pages["single"])
    assert not driver.find_element("id", "detail").is_displayed()
    by_css(driver, "#leaderboard button.model[data-model='tiny-l']")[0].click()
    assert driver.find_element("id", "detail").is_displayed()
    assert driver.find_element("id", "detail-title").text == "tiny-l: 2 setups"
    variants = [c.text for c in by_css(driver, "#detail-setups tbody td[data-key='variant']")]
    assert sorted(variants) == ["fp32", "int8"]
    img = driver.find_element("id", "detail-label")
    assert img.get_attribute("src").startswith("data:image/svg+xml")
    assert driver.execute_script("return arguments[0].naturalWidth", img) == 320
    link = driver.find_element("id", "label-download")
    assert link.get_attribute("download") == "tiny-l.svg"
    # the download is the label file harness site wrote beside the page
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    link.click()
    got = downloads / "tiny-l.svg"
    deadline = time.monotonic() + 30
    while not got.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    label = pages["single"].parent / "labels" / "tiny-l.svg"
    assert got.read_text() == label.read_text()
    measured = driver.find_element("id", "detail-measured").text
    assert "measured (rapl)" in measured and "rapl cpu:0 (counter): ok" in measured
    assert "No warnings on these measurements" not in measured
    assert "int8/cpu: cpu:0: counter reset inside the window; energy after it only" in measured
    driver.find_element("id", "detail-close").click()
    assert not driver.find_element("id", "detail").is_displayed()
    # the warning is flagged in the table too, and tiny-s carries none
    flags = by_css(driver, "#leaderboard tbody td[data-key='energy_method'] .warn")
    assert len(flags) == 1 and "counter reset" in flags[0].get_attribute("title")


def test_pareto_chart_draws_the_front(driver, pages):
    open_page(driver, pages["single"])
    # beside the table: accuracy and energy in one view
    traces = driver.execute_script(
        "return document.getElementById('chart-pareto').data"
        ".map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))"
    )
    names = [t["name"] for t in traces]
    assert names[-1] == "Pareto front" and sorted(names[:-1]) == ["tiny-l", "tiny-s"]
    points = [(x, y) for t in traces[:-1] for x, y in zip(t["x"], t["y"], strict=True)]
    x, y = np.array(points).T
    on_front = pareto_mask(x, y)
    assert sorted(traces[-1]["x"]) == pytest.approx(sorted(x[on_front]))
    assert by_css(driver, "#chart-pareto .main-svg"), "plotly drew an SVG"
    # the filters apply to the chart too
    type_into(driver, "f-min-accuracy", "0.78")
    n = driver.execute_script("return document.getElementById('chart-pareto').data[0].x.length")
    assert n == 1
    by_css(driver, "#tabs button[data-tab='charts']")[0].click()
    assert by_css(driver, "#chart-params .main-svg"), "energy per token against parameters"
    serving = driver.execute_script(
        "return document.getElementById('chart-serving').data"
        ".map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))"
    )
    assert serving == [{"name": "tiny-s/fp32/cpu", "x": [1, 4, 16], "y": [3.0, 1.5, 0.9]}]


def test_compare_view(driver, pages):
    open_page(driver, pages["single"])
    by_css(driver, "#tabs button[data-tab='compare']")[0].click()
    rows = {
        tr.get_attribute("data-key"): [td.text for td in tr.find_elements("css selector", "td")]
        for tr in by_css(driver, "#compare-table tbody tr")
    }
    # tiny-l (A) against tiny-s (B): their cheapest setups, int8 at batch 8: 8 × 0.3 × 0.6 = 1.44 J and 0.18 J
    assert rows["energy_per_query_j"][1:] == ["1.44", "0.18", "0.125"]
    assert rows["best_setup"][1:3] == ["int8 / cpu", "int8 / cpu"]


def test_history_marks_the_regressions(driver, pages):
    open_page(driver, pages["nightly"])
    by_css(driver, "#tabs button[data-tab='history']")[0].click()
    assert "3 runs of suite nightly" in driver.find_element("id", "history-note").text
    traces = driver.execute_script(
        "return document.getElementById('chart-history-energy_per_token_j').data"
        ".map(t => ({name: t.name, n: t.x.length}))"
    )
    setups = [t for t in traces if t["name"] != "regression (harness compare)"]
    flagged = [t for t in traces if t["name"] == "regression (harness compare)"]
    assert len(setups) == 4 and all(t["n"] == 3 for t in setups)
    assert flagged == [{"name": "regression (harness compare)", "n": 4}]
    regressions = by_css(driver, "#regressions tbody tr")
    assert len(regressions) >= 4
    assert all("nightly-20250103" in tr.text for tr in regressions)


def test_compare_view_sets_two_models_side_by_side_at_a_shape_both_measured(driver, tmp_path):
    # a at batch 1 (1.0 J) and batch 8 (0.2 J), b at batch 1 only (0.9 J): the view set a's
    # batch 8 against b's batch 1 ("0.2" against "0.9"); at batch 1 on both sides b saves 10%
    cases = [
        infer_case("a", "fp32", "cpu", 1, 1.0, trace=False),
        infer_case("a", "fp32", "cpu", 8, 0.2, trace=False),
        infer_case("b", "fp32", "cpu", 1, 0.9, trace=False),
        infer_case("c", "fp32", "cpu", 4, 0.5, trace=False),
    ]
    page = build_site([write_run(tmp_path / "run", cases)], tmp_path / "site")
    open_page(driver, page)
    by_css(driver, "#tabs button[data-tab='compare']")[0].click()

    def rows():
        return {
            tr.get_attribute("data-key"): [td.text for td in tr.find_elements("css selector", "td")]
            for tr in by_css(driver, "#compare-table tbody tr")
        }

    got = rows()
    assert got["shape"][1:3] == ["batch 1", "batch 1"]
    assert got["energy_per_query_j"][1:] == ["1", "0.9", "0.9"]
    # a against c: no batch size in common, no figure
    driver.find_element("css selector", "#compare-b option[value='c']").click()
    got = rows()
    assert "No shape both measured (a: batch 8, batch 1; c: batch 4)" in got["no-shape"][0]
    assert got["energy_per_query_j"][1:] == ["—", "—", ""]


def test_check_marks_and_failed_rows_left_off_then_shown(driver, tmp_path):
    import json

    warm = infer_case("tiny-m", "fp32", "cpu", 8, 0.9, params=3e6)
    for r in warm.reps:
        r["stop_reason"] = "time_budget"
    hot = infer_case("tiny-l", "fp32", "cpu", 8, 60.0, params=8e6)
    for r in hot.reps:  # the CPU drew far past its 65 W TDP: the row fails harness check
        r.update(energy_cpu_j=r["energy_j"], duration_s=r["energy_j"] / 200.0)
    run = write_run(tmp_path, [infer_case("tiny-s", "fp32", "cpu", 8, 0.5), warm, hot])
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["suite"]["measurement"]["tdp_w"] = 65
    (run / "manifest.json").write_text(json.dumps(manifest))
    open_page(driver, build_site([run], tmp_path / "site"))
    assert board_models(driver) == ["tiny-s", "tiny-m"]
    marks = {
        tr.get_attribute("data-model"): tr.find_element("css selector", "td[data-key='check']")
        for tr in by_css(driver, "#leaderboard tbody tr")
    }
    assert marks["tiny-s"].text == "✓ passed" and marks["tiny-m"].text == "⚠ warned"
    assert "repeat.stop_reason (warn: time_budget" in marks["tiny-m"].get_attribute("title")
    note = driver.find_element("id", "failed-note")
    assert note.is_displayed() and note.text.startswith("1 setup left off: failed harness check")
    driver.find_element("id", "f-failed").click()
    assert "tiny-l" in board_models(driver)
    row = by_css(driver, "#leaderboard tbody tr[data-model='tiny-l'] td[data-key='check']")[0]
    assert row.text == "✗ failed" and "energy.power_band (fail" in row.get_attribute("title")
