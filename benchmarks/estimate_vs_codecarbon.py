"""Our estimate beside codecarbon's, for the same CPU-bound window, in one run.

    python benchmarks/estimate_vs_codecarbon.py [--seconds S] [--workers N]

Where nothing measures (no RAPL, no NVML: a cloud VM, a laptop without RAPL access), the
harness estimates. This opens one window around a CPU-bound load (N processes spinning for S
seconds, N = the CPUs by default) and reads, for that same window:

* the harness's estimate, ``auto`` model (boaviztapi's profile / CCF per-vCPU watts, boaviztapi's
  DIMM model), with the model and its inputs as ``harness sensors`` prints them;
* the harness's estimate with ``estimate.model: codecarbon`` (codecarbon's TDP × load rule);
* codecarbon's own ``OfflineEmissionsTracker`` (the ``codecarbon`` cross-check source), with the
  hardware it says it tracked;

and prints each one's CPU, memory and total joules and watts, and the ratios to codecarbon's.
An idle window of the same length comes first, so each model's idle-to-load swing shows.
Takes about 2 × S + 5 s (S = 20 by default).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1


def _tracker_j(source) -> dict[str, float]:
    """codecarbon's own CPU and RAM totals so far (joules), as its tracker books them."""
    tracker = getattr(source, "_tracker", None)
    if tracker is None:
        return {}
    return {
        "cpu": tracker._total_cpu_energy.kWh * 3.6e6,
        "ram": tracker._total_ram_energy.kWh * 3.6e6,
    }


def _window(meters, name: str, seconds: float, workers: int, codecarbon) -> tuple[list, dict]:
    """The meters' measurements of one window, and codecarbon's own CPU/RAM split of it."""
    for m in meters:
        m.begin(name)
    cc0 = _tracker_j(codecarbon)  # the first meter's edge has just read the tracker
    if workers:
        procs = [mp.Process(target=_spin, args=(seconds,)) for _ in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    else:
        time.sleep(seconds)
    out = [m.end(name) for m in meters]
    cc1 = _tracker_j(codecarbon)
    return out, {k: cc1[k] - cc0[k] for k in cc1}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    from harness.meter import Meter
    from harness.sensors.codecarbon_source import CodecarbonSource
    from harness.sensors.estimate import EstimateSource

    auto = EstimateSource()
    ours_cc = EstimateSource(estimate_model="codecarbon")
    codecarbon = CodecarbonSource(measure_power_secs=1.0)
    meters = [
        Meter(sensors=[auto, codecarbon], sample_hz=10),
        Meter(sensors=[ours_cc], sample_hz=10),
    ]
    try:
        rows = {}
        for name, workers in (("idle", 0), ("load", args.workers)):
            (m_auto, m_cc), cc_split = _window(meters, name, args.seconds, workers, codecarbon)
            rows[name] = {
                "harness auto": (m_auto.energy_j, m_auto.total_j, m_auto.duration_s),
                "harness codecarbon-rule": (m_cc.energy_j, m_cc.total_j, m_cc.duration_s),
                "codecarbon tracker": (
                    cc_split,
                    m_auto.crosscheck_j.get("codecarbon", float("nan")),
                    m_auto.duration_s,
                ),
            }
        tracker = getattr(codecarbon, "_tracker", None)
        cc_hw = (tracker._conf.get("hardware") if tracker is not None else None) or ["?"]
    finally:
        for m in meters:
            m.close()

    print("Models")
    for s in meters[0].statuses + meters[1].statuses:
        if s.source == "estimate":
            print(f"  harness {s.domain}: {s.reason}")
    print(f"  codecarbon tracker: {'; '.join(map(str, cc_hw))}")
    print()
    print(f"{'window':6} {'source':26} {'cpu_j':>9} {'ram_j':>8} {'total_j':>9} {'avg_w':>7} "
          f"{'÷ codecarbon':>12}")  # fmt: skip
    for name, by_source in rows.items():
        cc_total = by_source["codecarbon tracker"][1]
        for label, (energy, total, duration) in by_source.items():
            cpu = energy.get("cpu", float("nan"))
            ram = energy.get("ram", float("nan"))
            ratio = total / cc_total if cc_total and cc_total == cc_total else float("nan")
            print(
                f"{name:6} {label:26} {cpu:9.1f} {ram:8.1f} {total:9.1f} "
                f"{total / duration:7.2f} {ratio:12.3f}"
            )
    print(
        f"\nload: {args.workers} spinning processes for {args.seconds:g} s; idle: a sleep as long"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
