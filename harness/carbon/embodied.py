"""Embodied emissions: what making the machine emitted, amortised over its lifetime.

boaviztapi (Boavizta's methods and reference data) is used as a library, offline: no API server.
The machine is described to it as its server endpoint takes a configuration (``POST /v1/server``
with the ``platform_compute_medium`` archetype): CPU (name, sockets, cores), memory (GB), GPUs
(name, count); the parts nothing here knows (disk, power supply, case, motherboard, assembly)
are the archetype's. Its ``gwp`` ``embedded`` impact (kgCO2e, end of life excluded) is amortised
linearly over ``hardware_lifetime_years``:

    embodied_g = embodied_kg × 1000 × duration_s / (lifetime_years × 8760 h × 3600 s)

A window occupies the whole machine, so the whole machine is charged. A part boaviztapi does not
recognise by name gets boaviztapi's default for that part, and is listed as such.
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from dataclasses import dataclass, field

from harness.errors import HarnessError

HOURS_PER_YEAR = 8760.0  # boaviztapi's own: 4 years = 35,040 h
ARCHETYPE = "platform_compute_medium"


@dataclass(frozen=True)
class Machine:
    """What is known of a machine, as boaviztapi takes it."""

    cpu_name: str | None = None
    cpu_units: int = 1
    cpu_cores: int | None = None
    memory_gb: float | None = None
    #: (name, count) per GPU model
    gpus: tuple[tuple[str, int], ...] = ()

    def configuration(self) -> dict:
        cpu: dict = {"units": self.cpu_units}
        if self.cpu_name:
            cpu["name"] = self.cpu_name
        if self.cpu_cores:
            cpu["core_units"] = self.cpu_cores
        config: dict = {"cpu": cpu}
        if self.memory_gb:
            config["ram"] = [{"units": 1, "capacity": max(1, round(self.memory_gb))}]
        if self.gpus:
            name, count = self.gpus[0]  # boaviztapi's server takes one GPU model
            config["gpu"] = {"units": sum(n for _, n in self.gpus), "name": name}
        return config


@dataclass
class Embodied:
    """A machine's embodied emissions (kgCO2e) by boaviztapi, with its parts and their origin."""

    kg: float
    kg_min: float
    kg_max: float
    #: part -> kgCO2e
    parts: dict[str, float] = field(default_factory=dict)
    #: part -> how boaviztapi knew it ("matched X", "given", "boaviztapi default ...")
    origins: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def g_per_s(self, lifetime_years: float) -> float:
        return self.kg * 1000.0 / (lifetime_years * HOURS_PER_YEAR * 3600.0)

    def to_dict(self) -> dict:
        return {
            "embodied_kg": self.kg,
            "embodied_kg_min": self.kg_min,
            "embodied_kg_max": self.kg_max,
            "parts_kg": dict(self.parts),
            "origins": dict(self.origins),
            "source": self.source,
        }


def available() -> bool:
    try:
        importlib.metadata.version("boaviztapi")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _origin(part: str, detail: dict, machine: Machine) -> str:
    name = detail.get("name") or {}
    if part.startswith(("CPU", "GPU")):
        if name.get("status") == "COMPLETED":
            return f"matched to {name.get('value')!r} in boaviztapi's data"
        if name.get("value"):
            return f"boaviztapi default ({name.get('value')!r} is not in its data)"
        return "boaviztapi default (model unknown)"
    if part.startswith("RAM"):
        capacity = detail.get("capacity") or {}
        status = "given" if capacity.get("status") == "INPUT" else "boaviztapi default"
        return f"{capacity.get('value')} GB {status}; density boaviztapi's average"
    return f"boaviztapi's {ARCHETYPE} archetype"


@functools.lru_cache(maxsize=16)
def embodied(machine: Machine) -> Embodied:
    """The machine's embodied emissions by boaviztapi (kgCO2e over the whole machine)."""
    if not available():
        raise HarnessError(
            "embodied emissions need boaviztapi (pip install boaviztapi --no-deps, see README)"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's fit warnings from boaviztapi's power model
        from boaviztapi.compute.impacts_computation import compute_impacts
        from boaviztapi.compute.verbose import verbose_device
        from boaviztapi.data.archetype import get_server_archetype
        from boaviztapi.dto.device import Server
        from boaviztapi.dto.device.device import mapper_server

        server = mapper_server(
            Server.model_validate({"configuration": machine.configuration()}),
            archetype=get_server_archetype(ARCHETYPE),
        )
        hours = server.usage.hours_life_time.value
        impacts = compute_impacts(model=server, selected_criteria=["gwp"], duration=hours)
        detail = verbose_device(server, selected_criteria=["gwp"], duration=hours)
    total = impacts["gwp"]["embedded"]
    parts, origins = {}, {}
    for part, d in detail.items():
        if isinstance(d, dict) and "impacts" in d:
            parts[part] = float(d["impacts"]["gwp"]["embedded"]["value"])
            origins[part] = _origin(part, d, machine)
    return Embodied(
        kg=float(total["value"]),
        kg_min=float(total["min"]),
        kg_max=float(total["max"]),
        parts=parts,
        origins=origins,
        source=f"boaviztapi {importlib.metadata.version('boaviztapi')} ({ARCHETYPE})",
    )


def machine_of(manifest: dict, frame=None) -> Machine:
    """The run's machine from its manifest (host facts) and the GPUs its records name."""
    host = manifest.get("host") or {}
    cpu_name = host.get("cpu") or host.get("cpu_model")
    sockets = int(host.get("sockets") or 1)
    # the manifest records logical cores; boaviztapi sizes the die by cores, so an SMT machine's
    # CPU is sized somewhat large (physical cores are used where a manifest has them)
    cores = host.get("physical_cores") or host.get("logical_cores") or host.get("cpu_count")
    memory_mb = host.get("memory_mb")
    gpus: dict[str, int] = {}
    if frame is not None and len(frame) and "device" in frame:
        seen = frame[frame["device"].astype(str).str.startswith("cuda")]
        for (_device, name), _ in seen.groupby(["device", "device_name"], dropna=True):
            gpus[str(name)] = gpus.get(str(name), 0) + 1
    return Machine(
        cpu_name=str(cpu_name) if cpu_name else None,
        cpu_units=sockets,
        cpu_cores=int(cores) // sockets if cores else None,
        memory_gb=float(memory_mb) / 1024.0 if memory_mb else None,
        gpus=tuple(sorted(gpus.items())),
    )
