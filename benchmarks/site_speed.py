"""The web leaderboard at scale: a page of 1,000 setups, its size and how fast it is interactive.

    python benchmarks/site_speed.py [--setups 1000] [--loads 3] [--keep DIR]

A synthetic run (tests/fakeruns.py) with ``--setups`` setups (100 models × 10 variants for 1,000),
each with one inference and one accuracy case, is written first (not timed). Then ``build_site``
runs once (timed), and headless Chromium (tests/sitebrowser.py), a fresh one each time, opens
the page from its file ``--loads`` times. Printed for each load: the time from navigation start
to the table answering (filters, sorting) and to the Pareto chart beside it being drawn; then the
medians, and how long one filter change takes to redraw the table and chart.
Goals: page under 6 MB, interactive in under 2 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fakeruns import accuracy_case, infer_case, write_run  # noqa: E402
from sitebrowser import close, headless_chromium, missing_reason, open_page  # noqa: E402

GOAL_MB = 6.0
GOAL_S = 2.0


def setups_cases(n_setups: int) -> list:
    cases = []
    for i in range(n_setups):
        model, variant = f"m{i // 10:03d}", f"v{i % 10}"
        params = 1e6 * 1.07 ** (i // 10)
        cost = params / 1e6 * (1 - 0.05 * (i % 10))
        hardware = "cpu" if i % 3 else "edge-1t"
        cases.append(
            infer_case(
                model, variant, hardware, 8, cost, params=params, seed=i, trace=False, reps=3
            )
        )
        acc = min(0.95, 0.3 + 0.006 * (i // 10) - 0.01 * (i % 10))
        cases.append(accuracy_case(model, variant, hardware, "arith_mc", acc, params=params))
    return cases


def data_bytes(page: Path) -> int:
    """Bytes of the inline JSON data in the page."""
    text = page.read_bytes()
    start = text.index(b'<script id="harness-data" type="application/json">')
    return text.index(b"</script>", start) - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setups", type=int, default=1000)
    ap.add_argument("--loads", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="write the run and the page here and keep them")
    args = ap.parse_args()
    why = missing_reason()
    if why:
        sys.exit(f"site_speed: {why}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        run = write_run(root / "results", setups_cases(args.setups), suite="site-speed")
        print(f"synthetic run: {args.setups} setups, written in {time.perf_counter() - t0:.1f} s")

        from harness.report.site import build_site

        t0 = time.perf_counter()
        page = build_site([run], root / "site")
        built = time.perf_counter() - t0
        size_mb = page.stat().st_size / 1e6
        data_mb = data_bytes(page) / 1e6
        print(f"build_site: {built:.2f} s -> {page}")
        print(
            f"page size: {size_mb:.2f} MB (data {data_mb:.2f} MB, the rest plotly and the "
            f"page's script) (goal < {GOAL_MB:g} MB): {'ok' if size_mb < GOAL_MB else 'MISSED'}"
        )
        # a fresh browser for each load: a visitor opening the file, with no cache of it
        loads, charts = [], []
        for i in range(args.loads):
            driver = headless_chromium()
            try:
                times = open_page(driver, page)
                rows = driver.execute_script(
                    "return document.querySelectorAll('#leaderboard tbody tr').length"
                )
                loads.append(times["interactive_s"])
                charts.append(times["chart_s"])
                print(
                    f"load {i + 1}: interactive after {times['interactive_s']:.2f} s "
                    f"({rows} model rows), Pareto chart drawn after {times['chart_s']:.2f} s"
                )
                if i == args.loads - 1:
                    # one filter change: the table is recomputed from all setups and redrawn
                    redraw_ms = driver.execute_script(
                        "const box = document.getElementById('f-min-accuracy');"
                        "const t = performance.now(); box.value = '0.5';"
                        "box.dispatchEvent(new Event('input')); return performance.now() - t;"
                    )
                    rows = driver.execute_script(
                        "return document.querySelectorAll('#leaderboard tbody tr').length"
                    )
                    print(
                        f"filter change (min accuracy 0.5): redrawn in {redraw_ms:.0f} ms ({rows} rows)"
                    )
            finally:
                close(driver)
        median = statistics.median(loads)
        print(
            f"interactive: median {median:.2f} s over {len(loads)} loads (goal < {GOAL_S:g} s): "
            f"{'ok' if median < GOAL_S else 'MISSED'}; "
            f"with the chart drawn: median {statistics.median(charts):.2f} s"
        )


if __name__ == "__main__":
    main()
