"""Carbon beyond the plug at report time: embodied_g, co2e_total_g and the boundary ladder.

Computed from what the run recorded (no slow work in the cases): the machine from the manifest,
each repetition's duration and energy, the idle watts of idle.json.

The ladder widens the boundary one step at a time, per 1,000 queries (inference) and per
training run:

1. GPU only: the accelerators' active energy (their energy less their idle draw);
2. + CPU and DRAM: the whole machine's active energy (``energy_dynamic_j``);
3. + idle share: the machine's idle draw over the same time (``energy_j``);
4. × PUE: the facility's overhead;
5. + embodied: the hardware's manufacturing, amortised (``embodied_g``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from harness.carbon import embodied as emb
from harness.errors import HarnessError
from harness.units import J_PER_KWH, J_PER_WH

RUNGS = ["gpu", "machine_active", "idle_share", "pue", "embodied"]
RUNG_TEXT = {
    "gpu": "GPU only",
    "machine_active": "+ CPU and DRAM",
    "idle_share": "+ idle share",
    "pue": "× PUE",
    "embodied": "+ embodied",
}


@dataclass
class Accounting:
    """What the run's embodied figures rest on."""

    lifetime_years: float = 4.0
    embodied: emb.Embodied | None = None
    machine: emb.Machine | None = None
    #: why there is no embodied figure (None when there is one)
    missing: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def g_per_s(self) -> float:
        return self.embodied.g_per_s(self.lifetime_years) if self.embodied else math.nan

    def to_dict(self) -> dict:
        out = {"hardware_lifetime_years": self.lifetime_years, "missing": self.missing}
        if self.embodied is not None:
            out.update(self.embodied.to_dict(), embodied_g_per_s=self.g_per_s)
        return out


def account(manifest: dict, frame: pd.DataFrame, carbon_block: dict | None) -> Accounting:
    """Fill ``embodied_g`` and ``co2e_total_g`` of every repetition (in place)."""
    block = carbon_block or {}
    years = float(block.get("hardware_lifetime_years") or 4.0)
    acc = Accounting(lifetime_years=years)
    acc.machine = emb.machine_of(manifest, frame)
    try:
        acc.embodied = emb.embodied(acc.machine)
    except HarnessError as e:
        acc.missing = str(e)
    except Exception as e:  # noqa: BLE001 - boaviztapi failing must not lose the report
        acc.missing = f"boaviztapi could not assess the machine: {type(e).__name__}: {e}"
    if frame.empty:
        return acc
    duration = pd.to_numeric(frame["duration_s"], errors="coerce")
    frame["embodied_g"] = duration * acc.g_per_s
    frame["co2e_total_g"] = pd.to_numeric(frame["co2e_g"], errors="coerce") + frame["embodied_g"]
    return acc


def _idle_w(idle: dict | None, hardware: str) -> dict[str, float]:
    entry = (idle or {}).get(hardware) or {}
    watts = entry.get("watts") if isinstance(entry, dict) else None
    return watts if isinstance(watts, dict) else {}


def rungs_j(row: dict, idle_w: dict[str, float]) -> dict[str, float]:
    """Joules at each energy rung of one repetition (gpu, machine_active, idle_share, pue)."""
    duration = float(row.get("duration_s") or 0.0)
    energy = _num(row.get("energy_j"))
    dynamic = _num(row.get("energy_dynamic_j"))
    gpu = _num(row.get("energy_gpu_j"))
    gpu_idle_w = sum(w for d, w in idle_w.items() if d.startswith("gpu:"))
    gpu_active = max(gpu - gpu_idle_w * duration, 0.0) if not math.isnan(gpu) else 0.0
    active = dynamic if not math.isnan(dynamic) else energy
    pue = _num(row.get("pue"))
    return {
        "gpu": gpu_active,
        "machine_active": max(active, gpu_active),
        "idle_share": energy,
        "pue": energy * (pue if not math.isnan(pue) else 1.0),
    }


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def ladder(frame: pd.DataFrame, idle: dict | None, case_ids: dict[tuple, tuple]) -> pd.DataFrame:
    """The ladder per setup: Wh and gCO2e at each rung, per 1,000 queries or per training run.

    ``case_ids``: ``{(model, variant, hardware): (kind, case_id)}``, kind ``infer`` (the headline
    shape: medians of its repetitions per 1,000 queries) or ``train`` (sums over its chunks).
    """
    rows = []
    ok = frame[frame["status"] == "ok"]
    for setup, (kind, case_id) in case_ids.items():
        reps = ok[ok["case_id"] == case_id]
        if reps.empty:
            continue
        per_rep = []
        for r in reps.to_dict("records"):
            joules = rungs_j(r, _idle_w(idle, str(r.get("hardware"))))
            g = _num(r.get("intensity_g_per_kwh"))
            co2 = {k: v / J_PER_KWH * g for k, v in joules.items()}
            # the PUE rung's CO2e is the record's own co2e_g, the embodied one adds embodied_g
            co2["embodied"] = co2["pue"] + _num(r.get("embodied_g"))
            joules["embodied"] = joules["pue"]
            scale = 1000.0 / _num(r.get("queries")) if kind == "infer" else 1.0
            per_rep.append({f"{k}_wh": v / J_PER_WH * scale for k, v in joules.items()})
            per_rep[-1].update({f"{k}_g": v * scale for k, v in co2.items()})
        values = pd.DataFrame(per_rep)
        summary = values.median() if kind == "infer" else values.sum(min_count=1)
        model, variant, hardware = setup
        rows.append(
            {
                "model": model,
                "variant": variant,
                "hardware": hardware,
                "kind": kind,
                "per": "1,000 queries" if kind == "infer" else "training run",
                "energy_method": reps["energy_method"].iloc[0],
                **summary.to_dict(),
            }
        )
    return pd.DataFrame(rows)
