"""Embodied emissions: what making the machine emitted, amortised over its lifetime.

boaviztapi (Boavizta's methods and reference data) is used as a library, offline: no API server.
The machine is described to it as its server endpoint takes a configuration (``POST /v1/server``
with the ``platform_compute_medium`` archetype): CPU (name, sockets, cores), memory (GB), GPUs
(name, count); the parts nothing here knows (disk, power supply, case, motherboard, assembly)
are the archetype's. Its ``gwp`` ``embedded`` impact (kgCO2e, end of life excluded) is amortised
linearly over ``hardware_lifetime_years``:

    embodied_g = embodied_kg × 1000 × duration_s / (lifetime_years × 8760 h × 3600 s)

On a machine of its own a window occupies the whole machine, so the whole machine is charged. On
a virtual machine (or a host shared by ``carbon.host_threads``) the physical host is described
instead (the CPU model, the archetype's sockets, memory and other parts) and charged by the share
used, as boaviztapi charges a cloud instance: the vCPUs ÷ the host's threads for every part, the
memory ÷ the host's memory for RAM, a GPU passed through whole (:func:`charged`). A cloud
instance type boaviztapi knows (``carbon.cloud_instance``, ``aws/m5.large``) is boaviztapi's own
figure for that instance. A part boaviztapi does not recognise by name gets boaviztapi's default
for that part, and is listed as such.
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
    #: sockets (None: the archetype's)
    cpu_units: int | None = 1
    cpu_cores: int | None = None
    memory_gb: float | None = None
    #: (name, count) per GPU model
    gpus: tuple[tuple[str, int], ...] = ()

    def configuration(self) -> dict:
        cpu: dict = {"units": self.cpu_units} if self.cpu_units else {}
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
    #: threads and memory (GB) of the machine as boaviztapi described it (None: unknown)
    threads: float | None = None
    memory_gb: float | None = None

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
        units = (detail.get("units") or {}).get("value")
        status = "given" if capacity.get("status") == "INPUT" else "boaviztapi default"
        size = f"{capacity.get('value')} GB"
        if units and units != 1:
            size = f"{units:g} × {size}"
        return f"{size} {status}; density boaviztapi's average"
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
    try:
        threads = float(server.get_total_vcpu())
    except TypeError:  # a CPU boaviztapi has no thread count for
        threads = None
    try:
        memory_gb = float(server.get_total_memory())
    except TypeError:
        memory_gb = None
    return Embodied(
        kg=float(total["value"]),
        kg_min=float(total["min"]),
        kg_max=float(total["max"]),
        parts=parts,
        origins=origins,
        source=f"boaviztapi {importlib.metadata.version('boaviztapi')} ({ARCHETYPE})",
        threads=threads,
        memory_gb=memory_gb,
    )


def _cloud_archetype(spec: str) -> tuple[str, str, dict]:
    """``(provider, instance type, boaviztapi's archetype)`` of ``provider/type``; HarnessError
    when boaviztapi does not know it (an exact match: no fuzzy substitution)."""
    provider, _, kind = spec.partition("/")
    if not provider or not kind:
        raise HarnessError(
            f"carbon.cloud_instance: {spec!r} is not provider/instance-type (e.g. aws/m5.large)"
        )
    if not available():
        raise HarnessError("carbon.cloud_instance needs boaviztapi (see README)")
    from boaviztapi.data.archetype import get_cloud_instance_archetype

    archetype = get_cloud_instance_archetype(kind, provider.lower())
    if not archetype:
        raise HarnessError(
            f"carbon.cloud_instance: boaviztapi does not know {kind!r} at {provider!r} "
            "(its data/archetypes/cloud/<provider>.csv lists the types)"
        )
    return provider.lower(), kind, archetype


def check_cloud_instance(spec: str) -> None:
    """Raise HarnessError unless boaviztapi knows the instance type ``provider/type``."""
    _cloud_archetype(spec)


@functools.lru_cache(maxsize=16)
def cloud_instance(spec: str) -> Embodied:
    """boaviztapi's embodied emissions of one cloud instance (its share of its platform)."""
    provider, kind, archetype = _cloud_archetype(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from boaviztapi.compute.impacts_computation import compute_impacts
        from boaviztapi.data.archetype import get_arch_value
        from boaviztapi.dto.device import Cloud
        from boaviztapi.dto.device.device import mapper_cloud_instance

        cloud = Cloud()
        cloud.usage = {}
        instance = mapper_cloud_instance(cloud, archetype=archetype)
        hours = instance.platform.usage.hours_life_time.value
        total = compute_impacts(model=instance, selected_criteria=["gwp"], duration=hours)
    total = total["gwp"]["embedded"]
    platform = get_arch_value(archetype, "platform", "default") or "?"
    vcpu = instance.vcpu.value
    of = instance.platform.get_total_vcpu()
    name = f"{provider} {kind}"
    return Embodied(
        kg=float(total["value"]),
        kg_min=float(total["min"]),
        kg_max=float(total["max"]),
        parts={name: float(total["value"])},
        origins={
            name: f"boaviztapi's cloud data: {vcpu:g} of the {of:g} vCPUs of its {platform} "
            "platform (memory by its share)"
        },
        source=f"boaviztapi {importlib.metadata.version('boaviztapi')} (cloud {name})",
        threads=float(vcpu),
    )


@dataclass(frozen=True)
class Share:
    """The part of a shared host charged to this machine."""

    #: vCPUs ÷ host threads: every part but RAM and GPUs
    cpu: float
    #: the machine's memory ÷ the host's (RAM parts); the cpu share where either is unknown
    ram: float
    #: how the share is known, in words
    origin: str


def charged(e: Embodied, share: Share | None) -> tuple[float, float, float]:
    """``(kg, kg_min, kg_max)`` charged to the machine: the whole of ``e`` without a share; with
    one, RAM parts by ``share.ram``, GPU parts whole (passed through), the rest by ``share.cpu``."""
    if share is None:
        return e.kg, e.kg_min, e.kg_max
    gpu = sum(kg for part, kg in e.parts.items() if part.startswith("GPU"))
    ram = sum(kg for part, kg in e.parts.items() if part.startswith("RAM"))
    rest = max(e.kg - gpu - ram, 0.0)
    kg = rest * share.cpu + ram * share.ram + gpu
    scale = kg / e.kg if e.kg else 0.0
    return kg, e.kg_min * scale, e.kg_max * scale


def machine_of(manifest: dict, frame=None, *, as_host: bool = False) -> Machine:
    """The run's machine from its manifest (host facts) and the GPUs its records name.

    ``as_host``: the physical host of a virtual machine, of which the manifest knows only the CPU
    model (sockets, cores and memory are the VM's own, so they are left to the archetype)."""
    host = manifest.get("host") or {}
    cpu_name = host.get("cpu") or host.get("cpu_model")
    gpus = _gpus(frame)
    if as_host:
        return Machine(
            cpu_name=str(cpu_name) if cpu_name else None,
            cpu_units=None,
            gpus=tuple(sorted(gpus.items())),
        )
    sockets = int(host.get("sockets") or 1)
    # the manifest records logical cores; boaviztapi sizes the die by cores, so an SMT machine's
    # CPU is sized somewhat large (physical cores are used where a manifest has them)
    cores = host.get("physical_cores") or host.get("logical_cores") or host.get("cpu_count")
    memory_mb = host.get("memory_mb")
    return Machine(
        cpu_name=str(cpu_name) if cpu_name else None,
        cpu_units=sockets,
        cpu_cores=int(cores) // sockets if cores else None,
        memory_gb=float(memory_mb) / 1024.0 if memory_mb else None,
        gpus=tuple(sorted(gpus.items())),
    )


def _gpus(frame) -> dict[str, int]:
    """GPU model -> count, from the devices the run's records name."""
    gpus: dict[str, int] = {}
    if frame is not None and len(frame) and "device" in frame:
        seen = frame[frame["device"].astype(str).str.startswith("cuda")]
        for (_device, name), _ in seen.groupby(["device", "device_name"], dropna=True):
            gpus[str(name)] = gpus.get(str(name), 0) + 1
    return gpus
