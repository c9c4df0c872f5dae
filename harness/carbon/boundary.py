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
    #: the machine (or, on a shared host, the whole host) as boaviztapi assessed it
    embodied: emb.Embodied | None = None
    machine: emb.Machine | None = None
    #: the part of a shared host charged to the run's machine (None: the whole machine)
    share: emb.Share | None = None
    #: the doubt the embodied figures carry (an assumed share), None when there is none
    warning: str | None = None
    #: why there is no embodied figure (None when there is one)
    missing: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def charged_kg(self) -> tuple[float, float, float]:
        """``(kg, kg_min, kg_max)`` charged to the run's machine."""
        if self.embodied is None:
            return math.nan, math.nan, math.nan
        return emb.charged(self.embodied, self.share)

    @property
    def g_per_s(self) -> float:
        kg = self.charged_kg[0]
        return kg * 1000.0 / (self.lifetime_years * emb.HOURS_PER_YEAR * 3600.0)

    def to_dict(self) -> dict:
        out = {"hardware_lifetime_years": self.lifetime_years, "missing": self.missing}
        if self.embodied is not None:
            kg, low, high = self.charged_kg
            out.update(self.embodied.to_dict(), embodied_g_per_s=self.g_per_s)
            out.update(charged_kg=kg, charged_kg_min=low, charged_kg_max=high)
            out.update(
                host_share_cpu=self.share.cpu if self.share else 1.0,
                host_share_ram=self.share.ram if self.share else 1.0,
                share_origin=self.share.origin if self.share else "the whole machine",
                warning=self.warning,
            )
        return out


def assess(manifest: dict, frame: pd.DataFrame, carbon_block: dict | None) -> Accounting:
    """The run's embodied accounting: the machine, or the share of its host (see
    :mod:`harness.carbon.embodied`), and the doubt it carries."""
    block = carbon_block or {}
    host = manifest.get("host") or {}
    acc = Accounting(lifetime_years=float(block.get("hardware_lifetime_years") or 4.0))
    instance = block.get("cloud_instance")
    host_threads = block.get("host_threads")
    shared = bool(host.get("virtual_machine")) or bool(host_threads)
    try:
        if instance:
            acc.embodied = emb.cloud_instance(str(instance))
            return acc
        acc.machine = emb.machine_of(manifest, frame, as_host=shared)
        acc.embodied = emb.embodied(acc.machine)
    except HarnessError as e:
        acc.missing = str(e)
        return acc
    except Exception as e:  # noqa: BLE001 - boaviztapi failing must not lose the report
        acc.missing = f"boaviztapi could not assess the machine: {type(e).__name__}: {e}"
        return acc
    if shared:
        _share_of_host(acc, host, host_threads)
    return acc


def _share_of_host(acc: Accounting, host: dict, host_threads) -> None:
    """Set the share of the host (vCPUs ÷ host threads; memory ÷ host memory for RAM), from
    ``carbon.host_threads``, else assumed from boaviztapi's host with a warning."""
    e = acc.embodied
    vcpus = host.get("logical_cores") or host.get("cpu_count")
    memory_mb = host.get("memory_mb")
    ask = "give carbon.host_threads (the host's threads) or carbon.cloud_instance"
    if host_threads:
        threads = float(host_threads)
        known = "carbon.host_threads"
    else:
        threads = e.threads
        known = (
            f"assumed: boaviztapi's {emb.ARCHETYPE} host with this CPU, its threads; the host "
            "is unknown on this virtual machine"
        )
    if not vcpus or not threads:
        acc.embodied = None
        acc.missing = (
            "a virtual machine whose share of its host is unknown "
            f"({'vCPUs' if not vcpus else 'host threads'} unknown): {ask}"
        )
        return
    cpu = min(1.0, float(vcpus) / threads)
    ram = cpu
    ram_text = ""
    if memory_mb and e.memory_gb:
        ram = min(1.0, float(memory_mb) / 1024.0 / e.memory_gb)
        ram_text = f"; RAM {float(memory_mb) / 1024:.3g} of {e.memory_gb:g} GB"
    acc.share = emb.Share(
        cpu=cpu, ram=ram, origin=f"{vcpus} of {threads:g} host threads ({known}){ram_text}"
    )
    if not host_threads:
        acc.warning = (
            f"embodied_g: share of the host assumed ({cpu:.3g} of its parts: {vcpus} of "
            f"{threads:g} threads of boaviztapi's default host); {ask}"
        )


def embodied_columns(frame: pd.DataFrame, acc: Accounting) -> pd.DataFrame:
    """``embodied_g`` and ``co2e_total_g`` of every repetition of ``frame`` (its index), and its
    ``warnings`` with the accounting's doubt added to each row that has an embodied figure: the
    one definition that the report and measurements.csv both use."""
    duration = pd.to_numeric(frame["duration_s"], errors="coerce")
    out = pd.DataFrame(index=frame.index)
    out["embodied_g"] = duration * acc.g_per_s
    out["co2e_total_g"] = pd.to_numeric(frame["co2e_g"], errors="coerce") + out["embodied_g"]
    warnings = frame["warnings"] if "warnings" in frame else pd.Series(None, index=frame.index)
    if acc.warning:
        has = out["embodied_g"].notna()
        warnings = warnings.where(~has, warnings.map(lambda w: _add_warning(w, acc.warning)))
    out["warnings"] = warnings
    return out


def _add_warning(warnings, warning: str) -> str:
    text = warnings if isinstance(warnings, str) and warnings else ""
    return text if warning in text else (f"{text};{warning}" if text else warning)


def account(manifest: dict, frame: pd.DataFrame, carbon_block: dict | None) -> Accounting:
    """Fill ``embodied_g`` and ``co2e_total_g`` of every repetition (in place)."""
    acc = assess(manifest, frame, carbon_block)
    if frame.empty:
        return acc
    filled = embodied_columns(frame, acc)
    for col in filled.columns:
        frame[col] = filled[col]
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

    ``case_ids``: ``{(model, variant, hardware, ...): (kind, case_id)}`` (a key may go on, so that
    one setup's use and making are two entries), kind the case's workload: one
    whose unit is a query (``infer``, the headline shape: medians of its repetitions per 1,000
    queries) or one that makes the model (``train``: sums over its chunks).
    """
    from harness.records import records_by_case
    from harness.workloads import trait

    rows = []
    wanted = [case_id for _, case_id in case_ids.values()]
    by_case = records_by_case(frame[(frame["status"] == "ok") & frame["case_id"].isin(wanted)])
    for setup, (kind, case_id) in case_ids.items():
        reps = by_case.get(case_id)
        if not reps:
            continue
        # a workload whose unit is a query is priced per 1,000 of them; a making, per run
        per_query = trait(kind, "unit") == "query"
        per_rep = []
        for r in reps:
            joules = rungs_j(r, _idle_w(idle, str(r.get("hardware"))))
            g = _num(r.get("intensity_g_per_kwh"))
            co2 = {k: v / J_PER_KWH * g for k, v in joules.items()}
            # the PUE rung's CO2e is the record's own co2e_g, the embodied one adds embodied_g
            co2["embodied"] = co2["pue"] + _num(r.get("embodied_g"))
            joules["embodied"] = joules["pue"]
            scale = 1000.0 / _num(r.get("queries")) if per_query else 1.0
            per_rep.append({f"{k}_wh": v / J_PER_WH * scale for k, v in joules.items()})
            per_rep[-1].update({f"{k}_g": v * scale for k, v in co2.items()})
        values = pd.DataFrame(per_rep)
        summary = values.median() if per_query else values.sum(min_count=1)
        model, variant, hardware = setup[:3]
        rows.append(
            {
                "model": model,
                "variant": variant,
                "hardware": hardware,
                "kind": kind,
                "per": "1,000 queries" if per_query else "training run",
                "energy_method": reps[0].get("energy_method"),
                **summary.to_dict(),
            }
        )
    return pd.DataFrame(rows)
