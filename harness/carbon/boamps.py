"""A run exported in the BoAmps format (Boavizta's AI energy-report standard), one report per
training or inference case.

The report is built with codecarbon's own BoAmps dataclasses (its #1113,
``codecarbon.output_methods.boamps``), so the two tools write the same schema: header, task
(stage, algorithm, dataset, requests), one measure per repetition (kWh, seconds, when, how
measured), system, software, infrastructure (CPU, GPU, RAM), environment (country, intensity)
and quality (``high`` for a measured figure, ``low`` for an estimate). Units are BoAmps' own:
kWh, seconds, billions of parameters, gCO2e/kWh.
"""

from __future__ import annotations

import datetime as dt
import math
import platform

from harness.units import J_PER_KWH


def _num(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _total(reps: list[dict], column: str) -> float | None:
    """The sum of a column over a case's repetitions, None where none has it."""
    values = [v for v in (_num(r.get(column)) for r in reps) if v is not None]
    return float(sum(values)) if values else None


def _billions(count) -> float | None:
    """A parameter count as BoAmps' ``parametersNumber`` takes it: billions (8 for an 8B model)."""
    n = _num(count)
    return None if n is None else n / 1e9


def _when(unix_s) -> str | None:
    t = _num(unix_s)
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _infrastructure(cls, carbon: dict, components: list):
    """``publicCloud`` with its provider and instance where the suite names one
    (``carbon.cloud_instance``: provider/type), else ``onPremise``."""
    instance = carbon.get("cloud_instance")
    if instance and "/" in str(instance):
        provider, _, kind = str(instance).partition("/")
        return cls(
            infra_type="publicCloud",
            cloud_provider=provider,
            cloud_instance=kind,
            components=components,
        )
    return cls(infra_type="onPremise", components=components)


def available() -> bool:
    try:
        import codecarbon.output_methods.boamps.models  # noqa: F401
    except ImportError:
        return False
    return True


def reports(run, frame) -> dict[str, dict]:
    """``{case_id: BoAmps report as a dict}`` for the run's ok cases of a workload with a
    life-cycle stage (training: train, distill, finetune; inference: infer, serve)."""
    from codecarbon.output_methods.boamps.mapper import (
        BOAMPS_FORMAT_SPEC_URI,
        BOAMPS_FORMAT_VERSION,
    )
    from codecarbon.output_methods.boamps.models import (
        BoAmpsAlgorithm,
        BoAmpsDataset,
        BoAmpsEnvironment,
        BoAmpsHardware,
        BoAmpsHeader,
        BoAmpsInfrastructure,
        BoAmpsMeasure,
        BoAmpsReport,
        BoAmpsSoftware,
        BoAmpsSystem,
        BoAmpsTask,
    )

    manifest = run.manifest
    host = manifest.get("host") or {}
    carbon = manifest.get("carbon") or {}
    version = (manifest.get("software") or {}).get("energy-harness") or "?"
    from harness.records import records_by_case
    from harness.workloads import kinds, trait

    # a case of a workload with a life-cycle stage (training, inference): what BoAmps reports
    ok = frame[
        (frame["status"] == "ok")
        & frame["workload"].isin(kinds(stage="training") + kinds(stage="inference"))
    ]
    out: dict[str, dict] = {}
    for case_id, reps in records_by_case(ok).items():
        first = reps[0]
        stage = trait(first["workload"], "stage")
        methods = {r.get("energy_method") for r in reps}
        measured = {m for m in methods if isinstance(m, str)} == {"measured"}
        measures = [
            BoAmpsMeasure(
                measurement_method=f"energy-harness ({r.get('energy_sources') or '?'})",
                version=str(version),
                cpu_tracking_mode=r.get("energy_sources") or None,
                power_consumption=_num(r.get("energy_j")) / J_PER_KWH
                if _num(r.get("energy_j")) is not None
                else None,
                measurement_duration=_num(r.get("duration_s")),
                measurement_date_time=_when(r.get("start_unix_s")),
            )
            for r in reps
        ]
        components = [
            BoAmpsHardware(
                component_type="cpu",
                component_name=host.get("cpu"),
                nb_component=int(host.get("logical_cores") or 1),
            )
        ]
        if str(first.get("device") or "").startswith("cuda"):
            components.append(
                BoAmpsHardware(
                    component_type="gpu", component_name=first.get("device_name"), nb_component=1
                )
            )
        if _num(host.get("memory_mb")):
            components.append(
                BoAmpsHardware(
                    component_type="ram", nb_component=1, memory_size=host["memory_mb"] / 1024
                )
            )
        queries, tokens_in = _total(reps, "queries"), _total(reps, "tokens_in")
        report = BoAmpsReport(
            header=BoAmpsHeader(
                format_version=BOAMPS_FORMAT_VERSION,
                format_version_specification_uri=BOAMPS_FORMAT_SPEC_URI,
                report_id=f"{run.run_id}/{case_id}",
                report_datetime=str(manifest.get("started") or "").replace("T", " ") or None,
            ),
            task=BoAmpsTask(
                task_stage=stage,
                task_family="textGeneration",
                nb_request=queries if stage == "inference" else None,
                algorithms=[
                    BoAmpsAlgorithm(
                        algorithm_type="llm",
                        algorithm_name=first.get("model"),
                        parameters_number=_billions(first.get("params")),
                        framework="pytorch",
                        quantization=first.get("quantization") or None,
                    )
                ],
                dataset=[
                    BoAmpsDataset(data_usage="input", data_type="token", data_quantity=tokens_in)
                ],
                task_description=str(first.get("case") or case_id),
            ),
            measures=measures,
            system=BoAmpsSystem(os=host.get("os") or platform.system()),
            software=BoAmpsSoftware(language="python", version=host.get("python")),
            infrastructure=_infrastructure(BoAmpsInfrastructure, carbon, components),
            environment=BoAmpsEnvironment(
                country=carbon.get("country"),
                power_source_carbon_intensity=_num(first.get("intensity_g_per_kwh")),
            ),
            quality="high" if measured else "low",
        )
        # secrets are masked where it is written (harness.atomic.write_json sanitises)
        out[str(case_id)] = report.to_dict()
    return out
