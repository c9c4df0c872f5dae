"""How far the training forecast is from what training then used, over the techniques suite.

    python benchmarks/forecast_error.py [RUN_DIR...] [--only GLOB] [--out DIR] [--repeat N]

Without RUN_DIR it runs the training cases of ``suites/techniques.yaml`` (train, distill and
finetune: ``--only`` narrows them) N times (``--repeat``, default 2: 10 training cases), each time
in a new run folder, in a temporary folder with a private machine lock; with RUN_DIRs it reads runs
that are already done (``harness run techniques`` writes one). Each training
case forecast its total energy and time after its first ``forecast_fraction`` of steps (10%; the
unmeasured warmup passes do not count). For each case it prints, side by side, the forecast with
its 95% interval and the actual, the error in % and whether the actual fell inside the interval;
then the share inside and the largest error. The goals: the actual inside the interval in at least
90% of the cases, and within 10%. Side by side, on the same measured blocks, it gives how often the
old interval (the t-interval of the early mean rate, not of the total) held. The machine's other load is not controlled: a forecast made while others' work came
and went says so by missing.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MAKERS = ("train", "distill", "finetune")
GOAL_PCT = 10.0


def _run_training(out: Path, only: str | None) -> Path:
    import os

    from harness.runner import orchestrate_run
    from harness.suite import expand, load_suite

    os.environ.setdefault("HARNESS_LOCK_FILE", str(out / "harness.lock"))
    cases = expand(load_suite(ROOT / "suites" / "techniques.yaml"))
    names = [c["case"] for c in cases if c["workload"]["type"] in MAKERS]
    if only:
        names = [n for n in names if fnmatch.fnmatchcase(n, only)]
    # one glob that picks exactly the training cases: {a,b} is not fnmatch; run them one by one
    run_dir = None
    for name in names:
        outcome = orchestrate_run(
            str(ROOT / "suites" / "techniques.yaml"),
            out,
            only=name,
            resume=run_dir,
            report=False,
            live=False,
            echo=lambda line: print(f"  {line}", flush=True),
        )
        run_dir = outcome.run_dir
    if run_dir is None:
        raise SystemExit("no training case matches --only")
    return run_dir


def old_interval(blocks: list[dict], total_steps: int) -> tuple[float, float]:
    """The interval forecasts had before: a 95% t-interval of the early mean rate × the rest."""
    import math
    import statistics

    from harness.report.stats import t975

    rate = blocks[1:] if len(blocks) >= 3 else blocks
    if len(rate) < 2:
        return math.nan, math.nan
    values = [b["energy_j"] / b["steps"] for b in rate]
    mean = statistics.fmean(values)
    half = float(t975(len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    seen = sum(b["energy_j"] for b in blocks)
    remaining = total_steps - sum(b["steps"] for b in blocks)
    return seen + remaining * max(0.0, mean - half), seen + remaining * (mean + half)


def rows(run_dir: Path) -> list[dict]:
    out = []
    for path in sorted((Path(run_dir) / "cases").glob("*/result.json")):
        r = json.loads(path.read_text())
        reps = r.get("repetitions") or []
        if r.get("status") != "ok" or not reps or reps[0].get("workload") not in MAKERS:
            continue
        f = (r.get("summary") or {}).get("forecast") or {}
        if not f:
            continue
        blocks = (r.get("summary") or {}).get("forecast_measured_blocks") or []
        total_steps = sum(x["steps"] for x in reps)
        old_low, old_high = old_interval(blocks, total_steps) if blocks else (None, None)
        actual_j = sum(x["energy_j"] for x in reps)
        actual_s = sum(x["duration_s"] for x in reps)
        out.append(
            {
                "case": r["case"],
                "method": reps[0].get("energy_method"),
                "after": f"{f['forecast_after_steps']}/{sum(x['steps'] for x in reps)}",
                **f,
                "actual_j": actual_j,
                "actual_s": actual_s,
                "error_pct": 100 * (f["forecast_j"] - actual_j) / actual_j,
                "error_s_pct": 100 * (f["forecast_s"] - actual_s) / actual_s,
                "inside": f["forecast_j_ci_low"] <= actual_j <= f["forecast_j_ci_high"],
                "old_inside": None if old_low is None else old_low <= actual_j <= old_high,
                "rel_width": (f["forecast_j_ci_high"] - f["forecast_j_ci_low"]) / f["forecast_j"],
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="*", type=Path)
    parser.add_argument("--only", help="glob over the training cases' names")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of the training cases")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    if not args.run_dir:
        out = args.out or Path(tempfile.mkdtemp(prefix="forecast-error-"))
        run_dirs = [_run_training(out, args.only) for _ in range(max(1, args.repeat))]
    else:
        run_dirs = args.run_dir
    found = [r for run_dir in run_dirs for r in rows(run_dir)]
    if not found:
        print(f"{', '.join(map(str, run_dirs))}: no training case with a forecast")
        return 1
    head = (
        f"{'case':44} {'energy':9} {'after':8} {'forecast J (95%)':30} {'actual J':>10} "
        f"{'error':>7} {'in':>3} {'old in':>6} {'time err':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in found:
        band = f"{r['forecast_j']:.4g} ({r['forecast_j_ci_low']:.4g}-{r['forecast_j_ci_high']:.4g})"
        print(
            f"{r['case']:44} {r['method'] or '?':9} {r['after']:8} {band:30} {r['actual_j']:10.4g} "
            f"{r['error_pct']:+6.1f}% {'yes' if r['inside'] else 'no':>3} "
            f"{_yes(r['old_inside']):>6} {r['error_s_pct']:+7.1f}%"
        )
    inside = sum(r["inside"] for r in found)
    old = [r["old_inside"] for r in found if r["old_inside"] is not None]
    within = sum(abs(r["error_pct"]) <= GOAL_PCT for r in found)
    worst = max(found, key=lambda r: abs(r["error_pct"]))
    print(
        f"\nactual inside the 95% interval: {inside} of {len(found)}; within {GOAL_PCT:g}%: "
        f"{within} of {len(found)}; largest error {worst['error_pct']:+.1f}% ({worst['case']}); "
        f"mean |error| {sum(abs(r['error_pct']) for r in found) / len(found):.1f}%"
    )
    widths = sorted(r["rel_width"] for r in found)
    print(
        f"coverage {100 * inside / len(found):.0f}% ({inside} of {len(found)}); the old interval "
        f"of the early mean rate, on the same blocks: "
        + (f"{sum(old)} of {len(old)}" if old else "no blocks stored")
        + f"; median interval width {100 * widths[len(widths) // 2]:.0f}% of the forecast"
    )
    print(f"runs: {', '.join(map(str, run_dirs))} ({time.monotonic() - t0:.0f} s)")
    return 0


def _yes(value) -> str:
    return "?" if value is None else ("yes" if value else "no")


if __name__ == "__main__":
    sys.exit(main())
