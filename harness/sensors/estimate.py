"""Estimated CPU and RAM energy, for machines where nothing measures them.

Every figure from here is labelled ``estimated``. Two models (``estimate_model``; a suite's ``measurement.estimate.model``):

* ``auto`` (the default): the best public model for the CPU in hand
  (``harness.sensors.power_model``): boaviztapi's consumption profile for a known TDP, Cloud
  Carbon Footprint's per-vCPU watts on a virtual machine whose TDP is unknown, else codecarbon's
  4 W per thread shaped by boaviztapi's profile; the part above idle scaled by the clock where
  cpufreq shows it; memory by boaviztapi's per-DIMM model, loaded like the CPU.
* ``codecarbon``: codecarbon's ``cpu_load`` model, power = TDP × (0.1 + 0.9 × u), and a
  constant ``ram_w_per_gb`` (0.375 W per GiB) × installed memory (also used whenever
  ``ram_w_per_gb`` is given).

u is the system-wide CPU utilisation from cumulative CPU times (busy = everything but idle and
iowait, as codecarbon's ``SystemCPULoadMeter`` counts it). The source is a counter: each stretch
between two reads where the CPU times moved is charged P(u of that stretch) × its length; the
stretch since the times last moved is charged the idle power until they move. With the sampler
on, reads come at ``sample_hz``, so a nonlinear profile integrates over short stretches; with
counters only, over the window (as codecarbon's 15-s readings do).

Attribution (``attribution``; a suite's ``measurement.estimate.attribution``): ``machine`` (the default) charges the whole machine's estimated
power; ``process`` charges the share of the CPU's busy time spent by this process and its
children (the case's own processes), of the machine's power at its load, with no idle floor.

The TDP is ``tdp_w`` if given, else codecarbon's shipped CPU table matched to this CPU's model
name with codecarbon's own matching rules (re-implemented over the CSV: importing codecarbon
costs pandas and a tenth of a second), else none (see above).
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import os
import re
import time
from pathlib import Path

import psutil

from harness.errors import HarnessError
from harness.hardware import cpu_model_name, socket_count
from harness.sensors import estimate_options
from harness.sensors import power_model as pm
from harness.sensors.base import ESTIMATE, ESTIMATED, OK, DomainStatus, Source

IDLE_FLOOR = 0.1  # codecarbon: "Minimum power consumption is 10% of TDP"
DEFAULT_W_PER_THREAD = 4.0  # codecarbon.core.cpu.DEFAULT_POWER_PER_CORE (per logical CPU)
RAM_W_PER_GB = 0.375  # codecarbon's RAM power per GiB
GIB = 1024**3
CLASSES = ("cpu", "memory")
MODELS = ("auto", "codecarbon")
ATTRIBUTIONS = ("machine", "process")

# Indirections the tests replace with scripted sequences.
_clock = time.perf_counter
_cpu_times = psutil.cpu_times


def _own_busy_s() -> float:
    """CPU seconds of this process and its children (live ones, and those it has waited for)."""
    me = psutil.Process(os.getpid())
    t = me.cpu_times()
    busy = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            busy += c.user + c.system
        except psutil.Error:
            continue
    return busy


_process_busy_s = _own_busy_s


#: a suite's ``measurement.estimate`` block as this source's keyword options
source_options = estimate_options


def busy_and_total_s(times) -> tuple[float, float]:
    """CPU seconds spent busy and in all, over all CPUs (codecarbon's definition).

    Guest time is already inside user and nice on Linux, so it is taken out of the total.
    """
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    busy = total - times.idle - getattr(times, "iowait", 0.0)
    return busy, total


class EstimateSource(Source):
    """An estimated CPU (``cpu``) and memory (``ram``) power model, read as a counter."""

    name = "estimate"
    method = ESTIMATED
    update_period_s = 0.01  # psutil.cpu_times counts in clock ticks (USER_HZ = 100)

    def __init__(
        self,
        classes: tuple[str, ...] | list[str] = CLASSES,
        tdp_w: float | None = None,
        ram_w_per_gb: float | None = None,
        estimate_model: str = "auto",
        attribution: str = "machine",
    ):
        unknown = [c for c in classes if c not in CLASSES]
        if unknown or not classes:
            raise HarnessError(
                f"estimate: classes must be some of {', '.join(CLASSES)}, not {list(classes)}"
            )
        if tdp_w is not None and not tdp_w > 0:
            raise HarnessError(f"tdp_w must be a positive number of watts, not {tdp_w}")
        if ram_w_per_gb is not None and not ram_w_per_gb >= 0:
            raise HarnessError(f"ram_w_per_gb must be zero or more, not {ram_w_per_gb}")
        if estimate_model not in MODELS:
            raise HarnessError(
                f"estimate.model must be one of {', '.join(MODELS)}, not {estimate_model!r}"
            )
        if attribution not in ATTRIBUTIONS:
            raise HarnessError(
                f"estimate.attribution must be one of {', '.join(ATTRIBUTIONS)}, "
                f"not {attribution!r}"
            )
        self.classes = tuple(dict.fromkeys(classes))
        self.tdp_w = tdp_w
        self.model = estimate_model
        self.attribution = attribution
        self.ram_w_per_gb = ram_w_per_gb
        #: where the TDP came from, in words (set by probe)
        self.tdp_source = ""
        self.cpu_model: pm.CpuModel | None = None
        self.ram_w = 0.0  # idle (or constant) memory watts
        self.ram_full_w = 0.0
        self._cpufreq: pm.Cpufreq | None = None
        self._opened = False

    # ------------------------------------------------------------------ probe
    def _resolve_cpu(self) -> pm.CpuModel:
        if self.model == "codecarbon":
            tdp, why = resolve_tdp(self.tdp_w)
            return pm.CpuModel("codecarbon", tdp_w=tdp, inputs=why)
        threads = psutil.cpu_count(logical=True) or 1
        found = self.tdp_w is not None or (cpu_model_name() and lookup_tdp(cpu_model_name()))
        if found:
            tdp, why = resolve_tdp(self.tdp_w)
            return pm.CpuModel("boaviztapi-tdp", tdp_w=tdp, inputs=why)
        model = cpu_model_name()
        if pm.is_virtual_machine():
            arch = pm.microarchitecture(model)
            watts = pm.CCF_VCPU_W.get(arch) if arch else None
            why = (
                f"virtual machine, {arch} per-vCPU watts (ccf-coefficients)"
                if watts
                else f"virtual machine, microarchitecture of {model!r} unknown: CCF's cloud "
                "average per vCPU"
            )
            return pm.CpuModel(
                "ccf-vcpu", vcpus=threads, vcpu_w=watts or pm.CCF_AVERAGE_VCPU_W, inputs=why
            )
        tdp, why = resolve_tdp(None)
        return pm.CpuModel("default-tdp", tdp_w=tdp, inputs=why)

    def probe(self) -> list[DomainStatus]:
        rows = []
        if "cpu" in self.classes:
            if self.cpu_model is None:
                self.cpu_model = self._resolve_cpu()
                self.tdp_w = self.cpu_model.tdp_w if self.tdp_w is None else self.tdp_w
                self.tdp_source = self.cpu_model.inputs
                if self.model == "auto":
                    self._cpufreq = pm.Cpufreq()
            freq = ""
            if self._cpufreq is not None:
                ratio = self._cpufreq.ratio()
                freq = (
                    f"; clock {ratio:.0%} of max now (cpufreq), above-idle power scaled by it"
                    if ratio is not None
                    else "; no cpufreq: clock not used"
                )
            reason = (
                f"estimated: {self.cpu_model.describe()}; u = system CPU utilisation{freq}; "
                f"attribution: {self.attribution}"
            )
            rows.append(DomainStatus(self.name, "cpu", ESTIMATE, OK, reason))
        if "memory" in self.classes:
            gib = psutil.virtual_memory().total / GIB
            if self.model == "codecarbon" or self.ram_w_per_gb is not None:
                per_gb = RAM_W_PER_GB if self.ram_w_per_gb is None else self.ram_w_per_gb
                self.ram_w = self.ram_full_w = per_gb * gib
                reason = (
                    f"estimated: {per_gb:g} W/GiB × {gib:.1f} GiB installed = "
                    f"{self.ram_w:.2f} W, constant (codecarbon's rule)"
                )
            else:
                self.ram_w, self.ram_full_w, why = pm.memory_w(gib * GIB / 1e9)
                reason = (
                    f"estimated: {self.ram_w:.2f} W idle to {self.ram_full_w:.2f} W at full load "
                    f"with the CPU's utilisation; {why}"
                )
            rows.append(
                DomainStatus(
                    self.name, "ram", ESTIMATE, OK, f"{reason}; attribution: {self.attribution}"
                )
            )
        return rows

    def counter_domains(self) -> list[str]:
        return [{"cpu": "cpu", "memory": "ram"}[c] for c in self.classes]

    # ------------------------------------------------------------------ counter
    def _ram_power_w(self, u: float) -> float:
        return self.ram_w + (self.ram_full_w - self.ram_w) * u

    def open(self) -> None:
        if ("cpu" in self.classes and self.cpu_model is None) or (
            "memory" in self.classes and not self.ram_full_w
        ):
            self.probe()
        t = _clock()
        # a constant memory model alone needs no CPU times
        self._needs_load = "cpu" in self.classes or self.ram_full_w != self.ram_w
        busy, total = busy_and_total_s(_cpu_times()) if self._needs_load else (0.0, 0.0)
        self._t_c, self._busy_c, self._total_c = t, busy, total
        self._own_c = _process_busy_s() if self.attribution == "process" else 0.0
        #: joules committed up to _t_c per domain
        self._committed = {"cpu": 0.0, "ram": 0.0}
        self._opened = True

    def _floor_w(self) -> dict[str, float]:
        if self.attribution == "process":
            return {"cpu": 0.0, "ram": 0.0}
        cpu = self.cpu_model.idle_w() if self.cpu_model is not None else 0.0
        return {"cpu": cpu, "ram": self.ram_w}

    def read_energy_j(self) -> dict[str, float]:
        if not self._opened:
            self.open()
        t = _clock()
        busy, total = busy_and_total_s(_cpu_times()) if self._needs_load else (0.0, 0.0)
        d_total = total - self._total_c
        # CPU times move in 10 ms ticks: until the total has moved, the utilisation of the
        # stretch since _t_c is unknown and only the idle floor is counted; the stretch is
        # charged at its load once the times move, so the counter never goes backwards.
        if d_total > 0:
            d_busy = busy - self._busy_c
            u = min(max(d_busy / d_total, 0.0), 1.0)
            dt = max(t - self._t_c, 0.0)
            share = 1.0
            if self.attribution == "process":
                own = _process_busy_s()
                share = min(max((own - self._own_c) / d_busy, 0.0), 1.0) if d_busy > 0 else 0.0
                self._own_c = own
            if self.cpu_model is not None:
                ratio = self._cpufreq.ratio() if self._cpufreq is not None else None
                power = self.cpu_model.power_w(u, 1.0 if ratio is None else ratio)
                self._committed["cpu"] += share * power * dt
            self._committed["ram"] += share * self._ram_power_w(u) * dt
            self._t_c, self._busy_c, self._total_c = t, busy, total
        floor = self._floor_w()
        tail = max(t - self._t_c, 0.0)
        out: dict[str, float] = {}
        if "cpu" in self.classes:
            out["cpu"] = self._committed["cpu"] + floor["cpu"] * tail
        if "memory" in self.classes:
            out["ram"] = self._committed["ram"] + floor["ram"] * tail
        return out

    def close(self) -> None:
        self._opened = False


# ---------------------------------------------------------------------- TDP
def resolve_tdp(tdp_w: float | None = None) -> tuple[float, str]:
    """The CPU TDP in watts for the whole machine, and where it came from (for the reason)."""
    if tdp_w is not None:
        return float(tdp_w), f"TDP {tdp_w:g} W given (tdp_w)"
    model = cpu_model_name()
    sockets = socket_count()
    match = lookup_tdp(model) if model else None
    if match is not None:
        per_socket_w, name = match
        times = f"{sockets} × " if sockets > 1 else ""
        return per_socket_w * sockets, (
            f"TDP {times}{per_socket_w:g} W from codecarbon's CPU table ({name}, "
            f"matched to {model!r})"
        )
    threads = psutil.cpu_count(logical=True) or 1
    tdp = DEFAULT_W_PER_THREAD * threads
    why = f"no TDP match for {model!r} in codecarbon's CPU table" if model else "CPU model unknown"
    return (
        tdp,
        f"{why}; default {DEFAULT_W_PER_THREAD:g} W/thread × {threads} threads (codecarbon's)",
    )


def _cpu_table_path() -> Path | None:
    # find_spec does not run codecarbon/__init__ (which imports pandas and the tracker)
    spec = importlib.util.find_spec("codecarbon")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data/hardware/cpu_power.csv"
    return path if path.is_file() else None


@functools.lru_cache(maxsize=1)
def _cpu_table() -> dict[str, float]:
    path = _cpu_table_path()
    if path is None:
        return {}
    table: dict[str, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                table.setdefault(row["Name"], float(row["TDP"]))
            except (KeyError, TypeError, ValueError):
                continue
    return table


@functools.lru_cache(maxsize=8)
def lookup_tdp(model: str) -> tuple[float, str] | None:
    """(TDP per socket in W, table name) for ``model`` by codecarbon's rules, or None.

    codecarbon's ``TDP._get_matching_cpu``: an exact (case-insensitive) name, then the name
    without "(R)", " CPU" and the clock speed, then a token-set match that must be perfect and
    unique (a tie between several table entries is no match).
    """
    table = _cpu_table()
    if not table:
        return None
    names = list(table)
    lower = {n.lower(): n for n in reversed(names)}  # the first entry wins, as extractOne does
    name = lower.get(model.lower())
    if name is None:
        cleaned = model.replace("(R)", "")
        cut = cleaned.find(" CPU @ ")
        if cut > 0:
            cleaned = cleaned[:cut]
        cleaned = re.sub(r" @\s*\d+\.\d+GHz", "", cleaned.replace(" CPU", ""))
        name = lower.get(cleaned.lower())
        if name is None:
            name = _token_set_match(cleaned, names)
    return (table[name], name) if name is not None else None


def _token_set_match(model: str, names: list[str]) -> str | None:
    try:
        from rapidfuzz import fuzz, process, utils
    except ImportError:  # codecarbon's dependency; without it only exact names match
        return None
    found = process.extract(
        model,
        names,
        processor=utils.default_process,
        scorer=fuzz.token_set_ratio,
        score_cutoff=100,
        limit=2,
    )
    if len(found) == 1:
        return found[0][0]
    return None  # no perfect match, or a tie: codecarbon's non-greedy rule gives up too
