"""How long `harness report` takes on a large run: 1,000 cases, 1,000 trace samples each.

    python benchmarks/report_speed.py [--cases 1000] [--samples 1000] [--keep DIR]

The synthetic run (tests/fakeruns.py) is written first and not timed; then build_report runs once
and the time is printed. Goal: under 5 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fakeruns import big_cases, write_run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=1000, help="trace rows per case")
    ap.add_argument("--keep", type=Path, help="write the run here and keep it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        cases = big_cases(args.cases, args.samples)
        run = write_run(root, cases, suite="speed")
        rows = sum(len(c.reps) for c in cases)
        print(
            f"synthetic run: {len(cases)} cases, {rows} repetitions, {args.samples} trace samples each, "
            f"written in {time.perf_counter() - t0:.1f} s (not timed)"
        )
        t0, c0 = time.perf_counter(), time.process_time()
        from harness.report import build_report  # imports (pandas, matplotlib) are part of the cost

        out = build_report(run)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        figures = sorted(p.name for p in (out / "figures").glob("*.png"))
        print(f"report: {out} ({len(figures)} figures)")
        # CPU time says what the report costs where other work shares the cores
        print(f"build_report: {elapsed:.2f} s wall, {cpu:.2f} s CPU (goal < 5 s)")


if __name__ == "__main__":
    main()
