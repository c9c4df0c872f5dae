"""The flat record of one repetition: column names (ARCHITECTURE.md) and the derived metrics.

Measurements, summary and leaderboard share these names; units live in the names. Every record
is built by ``measurement_columns`` (energy from a ``Measurement``) plus the workload's own work
and time columns, then ``derive`` fills the per-token and per-query metrics in one place.
"""

from __future__ import annotations

import math

from harness.meter import Measurement
from harness.sensors.domains import class_domains
from harness.units import J_PER_KWH, J_PER_WH  # noqa: F401  (re-exported)

IDENTITY = [
    "run_id",
    "suite",
    "case_id",
    "case",
    "model",
    "model_source",
    "params",
    "model_size_mb",
    "variant",
    "dtype",
    "quantization",
    "engine",
    "hardware",
    "device",
    "device_name",
    "node",
    "workload",
    "batch_size",
    "prompt_tokens",
    "new_tokens",
    "seq_len",
    "steps",
    "task",
    "repetition",
    "status",
    "error",
    "stop_reason",
    "warnings",
]
TIME = [
    "duration_s",
    "ttft_s",
    "tpot_s",
    "latency_p50_s",
    "latency_p90_s",
    "latency_p99_s",
    "start_unix_s",  # when the window opened (UTC, unix seconds): the hour its carbon is read at
]
WORK = ["tokens_in", "tokens_out", "samples", "queries"]
#: the machine's state in the window, where it reports it (ARCHITECTURE.md, Measurement rules)
MACHINE = ["power_limit_w", "cpu_max_mhz", "temp_start_c", "temp_end_c", "clock_mhz"]
ENERGY = [
    "energy_j",
    "energy_dynamic_j",
    "energy_cpu_j",
    "energy_dram_j",
    "energy_gpu_j",
    "energy_board_j",
    "energy_system_j",
    "energy_method",
    "energy_sources",
    "avg_power_w",
    "peak_power_w",
    "counter_vs_power",
]
DERIVED = [
    "energy_per_token_j",
    "energy_per_query_j",
    "wh_per_1000_queries",
    "tokens_per_s",
    "tokens_per_j",
]
MEMORY = ["peak_rss_mb", "peak_vram_mb"]
#: embodied_g and co2e_total_g are filled at report time (harness.carbon.boundary)
CARBON = ["intensity_g_per_kwh", "pue", "co2e_g", "embodied_g", "co2e_total_g", "water_l"]
ACCURACY = ["metric", "accuracy", "accuracy_stderr"]
#: a training case's forecast of its total, made after its first steps (workloads/forecast.py);
#: produce_j and produced_from are per setup, in the report's summary
MAKING = ["forecast_j", "forecast_j_ci_low", "forecast_j_ci_high"]

#: the serve workload's columns (ARCHITECTURE.md's names): concurrency, steady-state time and
#: per-request figures, latency percentiles; and what making the served model (GGUF export) cost
SERVING = [
    "concurrency",
    "requests",
    "requests_per_s",
    "steady_s",
    "energy_per_request_j",
    "ttft_p50_s",
    "ttft_p90_s",
    "ttft_p99_s",
    "itl_p50_s",
    "itl_p90_s",
    "itl_p99_s",
    "tpot_p50_s",
    "tpot_p90_s",
    "tpot_p99_s",
    "requests_ok",
    "requests_failed",
    "offered_rps",
    "min_steady_s",
    "inflight_avg",
    "sent_prompt_tokens",
    "server_prompt_tokens",
    "client_energy_j",
    "client_energy_method",
    "first_error",
    "produce_j",
]
#: the column order of measurements.csv; workloads may add more columns after these
COLUMNS = (
    IDENTITY
    + TIME
    + WORK
    + MACHINE
    + ENERGY
    + DERIVED
    + MEMORY
    + CARBON
    + ACCURACY
    + MAKING
    + SERVING
)

#: columns written only where some row fills them (a run with no such figure has no such column):
#: ``counter_vs_power`` needs a source that reads both a counter and its power (NVML, amdsmi)
OPTIONAL_COLUMNS = ("counter_vs_power",)

#: columns holding text (identity, labels); every other column of COLUMNS is numeric
TEXT_COLUMNS = {
    "run_id",
    "suite",
    "case_id",
    "case",
    "model",
    "model_source",
    "variant",
    "dtype",
    "quantization",
    "engine",
    "hardware",
    "device",
    "device_name",
    "node",
    "workload",
    "task",
    "status",
    "error",
    "stop_reason",
    "warnings",
    "energy_method",
    "energy_sources",
    "metric",
    "first_error",
    "client_energy_method",
}

#: numeric columns a ``command`` case may report on its last output line
WORK_FIELDS = set(TIME + WORK + MEMORY + ACCURACY + ["steps"]) - TEXT_COLUMNS - {"start_unix_s"}


def measurement_columns(m: Measurement, idle_w: dict[str, float] | None = None) -> dict:
    """The energy columns of a record from one window's measurement."""
    # component columns are filled whenever read, even when the total is a whole-device figure
    by_class = {
        cls: sum(m.energy_j[d] for d in domains)
        for cls, domains in class_domains(m.domain_methods).items()
    }
    for whole in ("board", "system"):
        if whole in m.energy_j:
            by_class[whole] = m.energy_j[whole]
    return {
        "duration_s": m.duration_s,
        "start_unix_s": m.start_unix or None,
        "energy_j": m.total_j,
        "energy_dynamic_j": m.dynamic_j(idle_w),
        "energy_cpu_j": by_class.get("cpu"),
        "energy_dram_j": by_class.get("memory"),
        "energy_gpu_j": by_class.get("gpu"),
        "energy_board_j": by_class.get("board"),
        "energy_system_j": by_class.get("system"),
        "energy_method": m.method,
        "energy_sources": "+".join(m.sources),
        "avg_power_w": m.avg_power_w,
        "peak_power_w": m.peak_power_w,
        "warnings": ";".join(m.warnings),
        "temp_start_c": m.temp_start_c,
        "temp_end_c": m.temp_end_c,
        "clock_mhz": m.clock_mhz,
        "power_limit_w": m.power_limit_w,
        "cpu_max_mhz": m.cpu_max_mhz,
        "counter_vs_power": worst_counter_vs_power(m),
    }


def worst_counter_vs_power(m: Measurement) -> float | None:
    """The window's counter-against-integrated-power difference furthest from 0 (signed), over
    the domains judged; None where no domain has both or every one was too short to judge."""
    judged = [v for v in m.counter_vs_power.values() if v is not None]
    return max(judged, key=abs) if judged else None


def _ratio(a, b):
    if a is None or b is None:
        return None
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return None
    if b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def derive(record: dict, carbon: dict | None = None) -> dict:
    """Fill the derived, carbon columns of a record in place (and return it).

    ``carbon``: ``{"intensity_g_per_kwh": float, "pue": float}`` (``harness.carbon.settings``);
    CO2e = energy × PUE × intensity. With an ``intensity_series`` the intensity is the one the
    window met (split across hours, ``harness.carbon.window_intensity``); with water factors,
    ``water_l`` = kWh × (WUE + PUE × EWIF).
    """
    energy = record.get("energy_j")
    tokens = record.get("tokens_out")
    if tokens is None and _trains(record.get("workload")):
        # training's work is the tokens it processes: per-token figures divide tokens_in
        tokens = record.get("tokens_in")
    queries = record.get("queries")
    record["energy_per_token_j"] = _ratio(energy, tokens)
    record["energy_per_query_j"] = _ratio(energy, queries)
    per_query = record["energy_per_query_j"]
    record["wh_per_1000_queries"] = per_query * 1000 / J_PER_WH if per_query is not None else None
    record["tokens_per_s"] = _ratio(tokens, record.get("duration_s"))
    record["tokens_per_j"] = _ratio(tokens, energy)
    if carbon:
        intensity = carbon.get("intensity_g_per_kwh")
        pue = carbon.get("pue", 1.0)
        series = carbon.get("intensity_series")
        start = record.get("start_unix_s")
        if series and start is not None:
            from harness.carbon import window_intensity

            intensity = window_intensity(series, float(start), float(record.get("duration_s") or 0))
        record["intensity_g_per_kwh"] = intensity
        record["pue"] = pue
        if energy is not None and intensity is not None:
            record["co2e_g"] = float(energy) / J_PER_KWH * pue * intensity
        wue = carbon.get("wue_l_per_kwh")
        ewif = carbon.get("electricity_water_l_per_kwh")
        if energy is not None and wue is not None and ewif is not None:
            from harness.carbon.water import water_l

            record["water_l"] = water_l(float(energy), pue, wue, ewif)
    return record


def _trains(kind) -> bool:
    """Whether a record's workload trains (its unit is a step): its work is the tokens it reads."""
    from harness.workloads import trait

    return trait(kind, "unit") == "step"


def records_by_case(frame) -> dict[str, list[dict]]:
    """The rows of a measurements frame as records, grouped by ``case_id`` in the order cases
    first appear: converted in one pass (a case's few rows converted on their own cost about a
    hundred times more on a frame of a hundred columns)."""
    out: dict[str, list[dict]] = {}
    for r in frame.to_dict("records"):
        out.setdefault(r["case_id"], []).append(r)
    return out
