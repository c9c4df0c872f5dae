"""What measuring your own training costs per step: the same loop with and without the tracker.

    python benchmarks/callback_overhead.py [--quick] [--step-ms 50] [--trainer]

A real training step (AdamW on a builtin model, one torch thread) is sized to about ``--step-ms``
milliseconds (default 50), then run in interleaved rounds, each round the same ``--steps`` steps
once bare and once inside ``harness.track`` (the core every callback uses: a Meter with its
defaults, ``sensors="auto"``, 10 Hz sampler, block windows, the forecast, the run folder written at
the end). Printed side by side:

* the direct cost: the time spent inside ``t.step()`` (the per-step hook, block edges and meter
  reads amortised over the steps), as a share of the mean bare step. This is the harness's own
  work per step, free of the noise of a shared machine;
* the wall-time overhead: the median over rounds of (with ÷ bare) − 1 of the mean step time, with
  the spread of the rounds. It also holds the sampler thread's CPU and what the machine's other
  load did meanwhile, so on a loaded machine its median is luck within that spread;
* the one-time cost of finishing (the run folder: result.json, trace, measurements), per run.

With ``--trainer``, transformers' ``Trainer`` runs the same model with and without
``EnergyCallback`` (direct cost: time inside the callback's hooks per step).

Goal: the per-step overhead at most 1 % of a 50 ms step (PASS/MISS on the direct cost; the wall
figure gets a "?" when the rounds scatter more than the goal itself).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL = 0.01


def make_step(model_name: str, batch: int, seq: int):
    import torch

    from harness.models.builtin import build

    model = build(model_name)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(3, 700, (batch, seq), generator=g)

    def step():
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return model, step


def calibrate(model_name: str, seq: int, target_s: float) -> tuple[int, float]:
    """The batch size whose step takes about ``target_s`` here (median of a few steps)."""
    batch = 1
    while True:
        _, step = make_step(model_name, batch, seq)
        step()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        per = statistics.median(times)
        if per >= target_s or batch >= 512:
            return batch, per
        batch = max(batch + 1, int(batch * target_s / max(per, 1e-4)))


def bare(step, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def tracked(step, n: int, model, out: Path, sample_hz=10) -> tuple[float, float, float]:
    """Mean step time inside track, time inside t.step() per step, and the finish's seconds."""
    import harness

    inside = 0.0
    options = {"model": model, "out": out, "report": False, "sample_hz": sample_hz}
    with harness.track("overhead", steps=n, **options) as t:
        t0 = time.perf_counter()
        for _ in range(n):
            loss = step()
            h0 = time.perf_counter()
            t.step(loss=loss)
            inside += time.perf_counter() - h0
        per_step = (time.perf_counter() - t0) / n
        f0 = time.perf_counter()
    finish_s = time.perf_counter() - f0
    return per_step, inside / n, finish_s


def trainer_hooks(model_name: str, batch: int, seq: int, steps: int, out: Path) -> dict:
    """transformers' Trainer with and without EnergyCallback: step time, time inside the hooks."""
    import torch
    from transformers import Trainer, TrainingArguments

    from harness.integrations.transformers import EnergyCallback
    from harness.models.builtin import build

    g = torch.Generator().manual_seed(0)
    rows = torch.randint(3, 700, (batch * steps, seq), generator=g)
    data = [{"input_ids": r, "labels": r} for r in rows]

    class Timed(EnergyCallback):
        inside = 0.0

        def on_step_end(self, *a, **k):
            t0 = time.perf_counter()
            super().on_step_end(*a, **k)
            Timed.inside += time.perf_counter() - t0

    def run(callbacks):
        args = TrainingArguments(
            output_dir=str(out / "hf"),
            max_steps=steps,
            per_device_train_batch_size=batch,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            logging_strategy="no",
        )
        trainer = Trainer(
            model=build(model_name), args=args, train_dataset=data, callbacks=callbacks
        )
        t0 = time.perf_counter()
        trainer.train()
        return (time.perf_counter() - t0) / steps

    base = run([])
    cb = Timed("overhead-trainer", out=out, report=False)
    with_cb = run([cb])
    return {"bare_s": base, "with_s": with_cb, "inside_s": Timed.inside / steps}


def pct(x: float) -> str:
    return f"{100 * x:+.3f} %"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-ms", type=float, default=50.0)
    ap.add_argument("--steps", type=int, default=200, help="steps per run")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--model", default="tiny-s")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="2 rounds of 100 steps")
    ap.add_argument("--trainer", action="store_true", help="also transformers' Trainer")
    ap.add_argument(
        "--sample-hz", type=float, default=10.0, help="the meter's sampler (0: counters only)"
    )
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.steps = 2, 100

    import logging

    import torch

    logging.getLogger("harness.integrations").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp(prefix="harness-callback-bench-"))
    batch, step_s = calibrate(args.model, args.seq, args.step_ms / 1000)
    model, step = make_step(args.model, batch, args.seq)
    for _ in range(3):
        step()  # warm
    print(
        f"step: {args.model} batch {batch} x {args.seq} tokens, ~{1000 * step_s:.1f} ms; "
        f"{args.rounds} rounds of {args.steps} steps, bare and tracked, alternating"
    )
    ratios, direct, finishes, bares = [], [], [], []
    for r in range(args.rounds):
        if r % 2 == 0:
            b = bare(step, args.steps)
            w, inside, fin = tracked(step, args.steps, model, out, args.sample_hz or None)
        else:
            w, inside, fin = tracked(step, args.steps, model, out, args.sample_hz or None)
            b = bare(step, args.steps)
        bares.append(b)
        ratios.append(w / b - 1)
        direct.append(inside / b)
        finishes.append(fin)
        print(
            f"  round {r + 1}: bare {1000 * b:.2f} ms/step, tracked {1000 * w:.2f} ms/step "
            f"({pct(w / b - 1)}), inside t.step() {1e6 * inside:.1f} us/step"
        )
    mean_step = statistics.fmean(bares)
    direct_share = statistics.median(direct)
    wall = statistics.median(ratios)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [min(ratios), 0, max(ratios)]
    spread = (q[0], q[-1])
    noisy = spread[1] - spread[0] > GOAL
    print()
    print(f"mean bare step: {1000 * mean_step:.2f} ms (goal is set at 50 ms steps)")
    verdict = "PASS" if direct_share <= GOAL else "MISS"
    print(f"direct cost per step (inside t.step()): {pct(direct_share)} of a step  [{verdict}]")
    wall_verdict = ("PASS" if wall <= GOAL else "MISS") + ("?" if noisy else "")
    print(
        f"wall-time overhead per step: median {pct(wall)}, rounds' interquartile range "
        f"{pct(spread[0])} to {pct(spread[1])}  [{wall_verdict}]"
    )
    print(f"finishing (run folder written, once per run): {statistics.median(finishes):.3f} s")
    if args.trainer:
        h = trainer_hooks(args.model, batch, args.seq, args.steps, out)
        print(
            f"transformers Trainer: bare {1000 * h['bare_s']:.2f} ms/step, with EnergyCallback "
            f"{1000 * h['with_s']:.2f} ms/step ({pct(h['with_s'] / h['bare_s'] - 1)}, one run "
            f"each), inside the callback's on_step_end {pct(h['inside_s'] / h['bare_s'])} of a step"
        )
    return 0 if direct_share <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
