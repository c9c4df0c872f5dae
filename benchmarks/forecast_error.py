"""How far the training forecast is from what training then used, over the techniques suite.

    python benchmarks/forecast_error.py [RUN_DIR] [--only GLOB] [--out DIR]

Without RUN_DIR it runs the training cases of ``suites/techniques.yaml`` (train, distill and
finetune: ``--only`` narrows them) in a temporary folder with a private machine lock; with
RUN_DIR it reads a run that is already done (``harness run techniques`` writes one). Each training
case forecast its total energy and time after its first ``forecast_fraction`` of steps (10%; the
unmeasured warmup passes do not count). For each case it prints, side by side, the forecast with
its 95% interval and the actual, the error in % and whether the actual fell inside the interval;
then the share inside and the largest error. The goals: the actual inside the interval, and
within 10%. The machine's other load is not controlled: a forecast made while others' work came
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
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("--only", help="glob over the training cases' names")
    parser.add_argument("--out", type=Path, help="keep the run here (default: a temporary folder)")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    if args.run_dir is None:
        out = args.out or Path(tempfile.mkdtemp(prefix="forecast-error-"))
        run_dir = _run_training(out, args.only)
    else:
        run_dir = args.run_dir
    found = rows(run_dir)
    if not found:
        print(f"{run_dir}: no training case with a forecast")
        return 1
    head = f"{'case':44} {'energy':9} {'after':8} {'forecast J (95%)':30} {'actual J':>10} {'error':>7} {'in':>3} {'time err':>8}"
    print(head)
    print("-" * len(head))
    for r in found:
        band = f"{r['forecast_j']:.4g} ({r['forecast_j_ci_low']:.4g}-{r['forecast_j_ci_high']:.4g})"
        print(
            f"{r['case']:44} {r['method'] or '?':9} {r['after']:8} {band:30} {r['actual_j']:10.4g} "
            f"{r['error_pct']:+6.1f}% {'yes' if r['inside'] else 'no':>3} {r['error_s_pct']:+7.1f}%"
        )
    inside = sum(r["inside"] for r in found)
    within = sum(abs(r["error_pct"]) <= GOAL_PCT for r in found)
    worst = max(found, key=lambda r: abs(r["error_pct"]))
    print(
        f"\nactual inside the 95% interval: {inside} of {len(found)}; within {GOAL_PCT:g}%: "
        f"{within} of {len(found)}; largest error {worst['error_pct']:+.1f}% ({worst['case']}); "
        f"mean |error| {sum(abs(r['error_pct']) for r in found) / len(found):.1f}%"
    )
    print(f"run: {run_dir} ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
