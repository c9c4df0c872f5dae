"""Where the quickstart's time goes, with a fresh interpreter per case and with the fork server.

    python benchmarks/quickstart_speed.py [--only GLOB] [--order spawn,fork] [--out DIR]

Runs ``suites/quickstart.yaml`` (27 cases) twice in one invocation, one run after the other:

* ``spawn``: each case's worker is a new ``python -m harness.worker`` (how every case ran before
  the fork server), so each one imports torch, transformers and lm-eval itself;
* ``fork``: each case's worker is forked from the run's fork server, which did those imports
  once (still one fresh process per case, its own process group and timeout).

For every case it prints, side by side, the wall time of the case as the runner saw it and the
worker's own breakdown from result.json's ``timing``: ``startup`` (process creation to the case,
the interpreter's start), ``imports`` (the model stack), and ``work`` (setup, warmup and the
measured repetitions), then the totals and the ratio spawn/fork of the whole run's wall time.
Both runs write to a temporary folder (``--out`` keeps them) and hold a private machine lock, so
they neither wait for nor block other runs; the machine's other load is not controlled, so
compare the ratio and the breakdown, not the minutes. ``--only 'tiny-xs/*'`` runs a subset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _run(mode: str, out: Path, only: str | None) -> tuple[float, dict[str, dict], float]:
    from harness.runner import orchestrate_run

    lines: list[str] = []
    t0 = time.monotonic()
    outcome = orchestrate_run(
        str(ROOT / "suites" / "quickstart.yaml"),
        out / mode,
        only=only,
        report=False,
        live=False,
        echo=lambda line: (lines.append(line), print(f"  {mode}: {line}", flush=True)),
        launcher_options={"fork_server": mode == "fork"},
    )
    wall_s = time.monotonic() - t0
    results = {}
    for path in (outcome.run_dir / "cases").glob("*/result.json"):
        r = json.loads(path.read_text())
        results[r["case"]] = r
    walls = {}
    for line in lines:  # "[3/27] ok     tiny-xs/fp32/cpu/infer-b1-p32-n32 (12.3 s), eta ..."
        if line.startswith("[") and "(" in line:
            name = line.split("] ", 1)[1][7:].rsplit(" (", 1)[0]
            walls[name] = float(line.rsplit(" (", 1)[1].split(" s)")[0])
    for name, r in results.items():
        r["_wall_s"] = walls.get(name)
    idle_s = (
        sum(
            float(v.get("seconds", 0))
            for v in json.loads((outcome.run_dir / "idle.json").read_text()).values()
        )
        if (outcome.run_dir / "idle.json").is_file()
        else 0.0
    )
    failed = [n for n, r in results.items() if r.get("status") != "ok"]
    if failed:
        print(f"  {mode}: {len(failed)} cases failed: {', '.join(failed)}", flush=True)
    return wall_s, results, idle_s


def _parts(r: dict) -> tuple[float, float, float]:
    t = r.get("timing") or {}
    startup = t.get("startup_s") or 0.0
    imports = t.get("imports_s") or 0.0
    work = sum(t.get(k) or 0.0 for k in ("setup_s", "warmup_s", "reference_s", "measure_s"))
    return startup, imports, work


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="a glob over case names (default: all 27)")
    parser.add_argument("--order", default="spawn,fork", help="which run goes first")
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.order.split(",")]
    if sorted(modes) != ["fork", "spawn"]:
        parser.error("--order is spawn,fork or fork,spawn")
    with tempfile.TemporaryDirectory(prefix="quickstart-speed-") as tmp:
        out = args.out or Path(tmp)
        os.environ["HARNESS_LOCK_FILE"] = str(out / "benchmark.lock")
        runs = {}
        for mode in modes:
            print(f"{mode}: running the quickstart ...", flush=True)
            runs[mode] = _run(mode, out, args.only)

        (spawn_s, spawn, spawn_idle), (fork_s, fork, fork_idle) = runs["spawn"], runs["fork"]
        head = f"{'case':44} {'spawn: wall  start imports  work':>36}   {'fork: wall  start imports  work':>35}"
        print("\n" + head)
        sums = {"spawn": [0.0, 0.0, 0.0, 0.0], "fork": [0.0, 0.0, 0.0, 0.0]}
        for name in sorted(set(spawn) | set(fork)):
            cells = []
            for mode, results in (("spawn", spawn), ("fork", fork)):
                r = results.get(name)
                if r is None:
                    cells.append(f"{'-':>36}")
                    continue
                wall = r.get("_wall_s") or 0.0
                startup, imports, work = _parts(r)
                for i, v in enumerate((wall, startup, imports, work)):
                    sums[mode][i] += v
                cells.append(f"{wall:11.1f} {startup:6.2f} {imports:7.2f} {work:6.1f}")
            print(f"{name:44} {cells[0]:>36}   {cells[1]:>35}")
        print(
            f"{'sum over cases':44} "
            + "   ".join(
                f"{s[0]:11.1f} {s[1]:6.1f} {s[2]:7.1f} {s[3]:6.1f}".rjust(36)
                for s in (sums["spawn"], sums["fork"])
            )
        )
        print(f"\nwhole run, wall: spawn {spawn_s:.1f} s, fork {fork_s:.1f} s")
        print(f"idle baselines inside those: spawn {spawn_idle:.1f} s, fork {fork_idle:.1f} s")
        overhead = sums["spawn"][0] - (sums["spawn"][3])
        print(
            f"per-case time outside the work (start-up, imports, meter, writing): "
            f"spawn {overhead:.1f} s, fork {sums['fork'][0] - sums['fork'][3]:.1f} s"
        )
        print(f"ratio spawn / fork (whole run): {spawn_s / fork_s:.2f}")
        if args.out is None:
            print("(run folders removed; --out DIR keeps them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
