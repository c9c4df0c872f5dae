"""Synthetic run folders in exactly the layout the runner writes (ARCHITECTURE.md, results folder).

results/<run_id>/manifest.json, cases/<case_id>/{case.json,result.json,trace.parquet},
measurements.parquet and measurements.csv. Records are built with harness.records.derive, so the
derived columns follow the same rules as real runs. Figures are chosen by the caller, so tests know
the answers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.records import COLUMNS, derive


@dataclass
class FakeCase:
    case: str
    workload: str
    reps: list[dict]
    spec: dict = field(default_factory=dict)
    status: str = "ok"
    error: str | None = None
    trace: pd.DataFrame | None = None

    @property
    def case_id(self) -> str:
        return hashlib.sha1(self.case.encode()).hexdigest()[:12]


def _identity(model, variant, hardware, *, params, method, dtype="float32", quantization=None):
    return {
        "model": model,
        "model_source": f"builtin:{model}" if model else None,
        "params": params,
        "model_size_mb": params * 4 / 1e6 if params else None,
        "variant": variant,
        "dtype": dtype,
        "quantization": quantization,
        "hardware": hardware,
        "device": "cpu",
        "device_name": "Fake CPU 9000",
        "energy_method": method,
        "energy_sources": "rapl" if method == "measured" else "estimate",
    }


def _spread(center: float, reps: int, rel_noise: float, seed: int) -> list[float]:
    """``reps`` values around ``center`` with a fixed, symmetric spread (median = center)."""
    if reps == 1 or rel_noise == 0:
        return [center] * reps
    offsets = np.linspace(-1, 1, reps)
    rng = np.random.default_rng(seed)
    rng.shuffle(offsets)
    return [center * (1 + rel_noise * o) for o in offsets]


def infer_case(
    model: str,
    variant: str,
    hardware: str,
    batch_size: int,
    energy_per_query_j: float | list[float],
    *,
    params: float = 1e6,
    reps: int = 3,
    rel_noise: float = 0.02,
    new_tokens: int = 32,
    prompt_tokens: int = 32,
    queries_per_rep: int | None = None,
    tokens_per_s: float = 200.0,
    method: str = "measured",
    seed: int = 0,
    trace: bool = True,
    trace_samples: int = 50,
    quantization: str | None = None,
) -> FakeCase:
    queries = queries_per_rep or batch_size * 4
    tokens = queries * new_tokens
    if isinstance(energy_per_query_j, list):
        per_query = energy_per_query_j
    else:
        per_query = _spread(energy_per_query_j, reps, rel_noise, seed)
    # larger batches decode more tokens per second (sub-linearly)
    durations = _spread(
        tokens / (tokens_per_s * batch_size**0.7), len(per_query), rel_noise, seed + 1
    )
    label = f"{model}/{variant}/{hardware}/infer-b{batch_size}-p{prompt_tokens}-n{new_tokens}"
    ident = _identity(
        model, variant, hardware, params=params, method=method, quantization=quantization
    )
    rows = []
    for i, (eq, d) in enumerate(zip(per_query, durations, strict=True)):
        rows.append(
            {
                **ident,
                "workload": "infer",
                "batch_size": batch_size,
                "prompt_tokens": prompt_tokens,
                "new_tokens": new_tokens,
                "repetition": i,
                "duration_s": d,
                "ttft_s": 0.01 * batch_size,
                "tpot_s": d / new_tokens,
                "tokens_in": queries * prompt_tokens,
                "tokens_out": tokens,
                "queries": queries,
                "energy_j": eq * queries,
                "avg_power_w": eq * queries / d,
                "peak_rss_mb": 500.0 + params / 1e5,
                "peak_vram_mb": None,
            }
        )
    spec = {
        "type": "infer",
        "batch_size": batch_size,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
    }
    tr = _trace(sum(durations), trace_samples, 20.0 + batch_size, seed) if trace else None
    return FakeCase(label, "infer", rows, spec=spec, trace=tr)


def train_case(
    model: str,
    variant: str,
    hardware: str,
    chunk_energy_j: list[float],
    *,
    params: float = 1e6,
    steps_per_chunk: int = 100,
    batch_size: int = 16,
    seq_len: int = 64,
    chunk_duration_s: float = 10.0,
    method: str = "measured",
    trace: bool = True,
    trace_samples: int = 50,
) -> FakeCase:
    ident = _identity(model, variant, hardware, params=params, method=method)
    rows = [
        {
            **ident,
            "workload": "train",
            "batch_size": batch_size,
            "seq_len": seq_len,
            "steps": steps_per_chunk,
            "repetition": i,
            "duration_s": chunk_duration_s,
            "tokens_in": steps_per_chunk * batch_size * seq_len,
            "energy_j": e,
            "avg_power_w": e / chunk_duration_s,
            "peak_rss_mb": 800.0,
        }
        for i, e in enumerate(chunk_energy_j)
    ]
    steps = steps_per_chunk * len(chunk_energy_j)
    label = f"{model}/{variant}/{hardware}/train-s{steps}-b{batch_size}-l{seq_len}"
    spec = {"type": "train", "steps": steps, "batch_size": batch_size, "seq_len": seq_len}
    tr = _trace(chunk_duration_s * len(rows), trace_samples, 40.0, 7) if trace else None
    return FakeCase(label, "train", rows, spec=spec, trace=tr)


def accuracy_case(
    model: str,
    variant: str,
    hardware: str,
    task: str,
    accuracy: float,
    *,
    stderr: float = 0.02,
    params: float = 1e6,
    energy_j: float = 50.0,
    method: str = "measured",
) -> FakeCase:
    ident = _identity(model, variant, hardware, params=params, method=method)
    rows = [
        {
            **ident,
            "workload": "accuracy",
            "task": task,
            "metric": "acc",
            "repetition": 0,
            "duration_s": 5.0,
            "samples": 200,
            "energy_j": energy_j,
            "accuracy": accuracy,
            "accuracy_stderr": stderr,
        }
    ]
    label = f"{model}/{variant}/{hardware}/accuracy-{task}"
    return FakeCase(label, "accuracy", rows, spec={"type": "accuracy", "task": task, "limit": 200})


def command_case(
    name: str, hardware: str, energies_j: list[float], method: str = "measured"
) -> FakeCase:
    ident = _identity(None, None, hardware, params=None, method=method)
    rows = [
        {**ident, "workload": "command", "repetition": i, "duration_s": 2.0, "energy_j": e}
        for i, e in enumerate(energies_j)
    ]
    return FakeCase(name, "command", rows, spec={"type": "command", "name": name, "run": ["true"]})


def _trace(duration_s: float, samples: int, level_w: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, duration_s, samples)
    frames = []
    for domain, scale in (("cpu:0", 1.0), ("dram", 0.15)):
        watts = level_w * scale * (1 + 0.1 * np.sin(t * 2) + 0.03 * rng.standard_normal(samples))
        frames.append(pd.DataFrame({"t_s": t, "domain": domain, "watts": watts}))
    return pd.concat(frames, ignore_index=True)


def write_run(
    root: Path,
    cases: list[FakeCase],
    *,
    suite: str = "fake",
    run_id: str | None = None,
    started: str = "2025-01-01T00:00:00Z",
    carbon: dict | None = None,
    report: dict | None = None,
    intensity_g_per_kwh: float | None = None,
    pue: float | None = None,
    host: dict | None = None,
) -> Path:
    """Write a run folder under ``root``; returns its path (``host``: the manifest's host facts)."""
    if run_id is None:
        stamp = started.replace("-", "").replace(":", "").rstrip("Z")
        run_id = f"{suite}-{stamp}-" + hashlib.sha1(f"{suite}{started}".encode()).hexdigest()[:6]
    carbon = carbon if carbon is not None else {"country": "FRA", "pue": 1.0}
    run = Path(root) / run_id
    (run / "cases").mkdir(parents=True)
    suite_dict = {
        "name": suite,
        "description": "A synthetic run written by tests/fakeruns.py.",
        "carbon": carbon,
        "measurement": {"sensors": "auto", "sample_hz": 10, "min_repeats": 3},
    }
    if report is not None:
        suite_dict["report"] = report
    manifest = {
        "schema_version": 1,
        "run_id": run_id,
        "suite": suite_dict,
        "started": started,
        "finished": started,
        "host": host or {"hostname": "fakehost", "cpu": "Fake CPU 9000"},
        "sensors": [{"source": "rapl", "domain": "cpu:0", "kind": "counter", "status": "ok"}],
        "carbon": carbon,
    }
    (run / "manifest.json").write_text(json.dumps(manifest, indent=1))
    records = []
    grid = None
    if intensity_g_per_kwh is not None:
        grid = {"intensity_g_per_kwh": intensity_g_per_kwh, "pue": pue or 1.0}
    for c in cases:
        d = run / "cases" / c.case_id
        d.mkdir()
        (d / "case.json").write_text(
            json.dumps({"case_id": c.case_id, "case": c.case, "suite": suite, "workload": c.spec})
        )
        reps = []
        for r in c.reps:
            rec = {col: None for col in COLUMNS}
            rec.update(r)
            rec.update(
                run_id=run_id,
                suite=suite,
                case_id=c.case_id,
                case=c.case,
                status=c.status,
                error=c.error,
            )
            # a real stop reason (harness.stopping), unless the case plants its own
            planned = c.workload in ("train", "accuracy")
            rec["stop_reason"] = r.get("stop_reason") or ("planned" if planned else "converged")
            derive(rec, grid)
            reps.append(rec)
        records.extend(reps)
        result = {"status": c.status, "error": c.error, "repetitions": reps, "summary": {}}
        (d / "result.json").write_text(json.dumps(result))
        if c.trace is not None:
            c.trace.to_parquet(d / "trace.parquet", index=False)
    frame = pd.DataFrame(records, columns=COLUMNS)
    frame.to_parquet(run / "measurements.parquet", index=False)
    frame.to_csv(run / "measurements.csv", index=False)
    return run


def standard_cases(*, method: str = "measured", scale: float = 1.0) -> list[FakeCase]:
    """A small matrix: 2 models × 2 variants on one CPU; train (fp32), infer b1/b8, accuracy."""
    cases: list[FakeCase] = []
    sizes = {"tiny-s": 1e6, "tiny-l": 8e6}
    for mi, (model, params) in enumerate(sizes.items()):
        size = params / 1e6
        cases.append(
            train_case(
                model, "fp32", "cpu", [100.0 * size * scale] * 3, params=params, method=method
            )
        )
        for vi, variant in enumerate(("fp32", "int8")):
            q = "int8-dynamic" if variant == "int8" else None
            for b in (1, 8):
                e = scale * size * (1.0 if b == 1 else 0.3) * (0.6 if variant == "int8" else 1.0)
                cases.append(
                    infer_case(
                        model,
                        variant,
                        "cpu",
                        b,
                        e,
                        params=params,
                        method=method,
                        seed=mi * 10 + vi,
                        quantization=q,
                    )
                )
            acc = 0.5 + 0.3 * mi - 0.05 * vi
            cases.append(
                accuracy_case(model, variant, "cpu", "arith_mc", acc, params=params, method=method)
            )
    return cases


def big_cases(n_cases: int = 1000, trace_samples: int = 1000, reps: int = 3) -> list[FakeCase]:
    """About ``n_cases`` cases over many setups, each with a trace of ``trace_samples`` rows."""
    cases: list[FakeCase] = []
    models = [(f"m{i:02d}", 1e6 * 2**i) for i in range(12)]
    i = 0
    while len(cases) < n_cases:
        mi = i % len(models)
        model, params = models[mi]
        vi = (i // len(models)) % 4
        hi = (i // (4 * len(models))) % 5
        variant, hardware = f"v{vi}", f"hw{hi}-{i // (20 * len(models))}"
        cost = params / 1e6 * (1 + 0.4 * hi) * (1 - 0.2 * vi)
        for b in (1, 2, 4, 8, 16, 32):
            cases.append(
                infer_case(
                    model,
                    variant,
                    hardware,
                    b,
                    cost / b**0.5,
                    params=params,
                    reps=reps,
                    seed=i * 7 + b,
                    trace_samples=trace_samples // 2,
                    tokens_per_s=400.0 / (1 + 0.4 * hi),
                    method="estimated" if hi == 4 else "measured",
                )
            )
        acc = min(0.95, 0.3 + 0.05 * mi - 0.03 * vi)
        cases.append(accuracy_case(model, variant, hardware, "arith_mc", acc, params=params))
        cases.append(
            train_case(
                model,
                variant,
                hardware,
                [params / 1e4 * (1 + 0.4 * hi)] * reps,
                params=params,
                trace_samples=trace_samples // 2,
            )
        )
        i += 1
    return cases[:n_cases]
