"""Estimated CPU and RAM energy, for machines where nothing measures them.

Every figure from here is labelled ``estimated``. The model follows codecarbon's (its
``cpu_load`` mode and its RAM rule) so that an estimate here and codecarbon's agree in spirit:

* ``cpu``: power = TDP × (0.1 + 0.9 × u), with u the system-wide CPU utilisation from cumulative
  CPU times (busy = everything but idle and iowait, as codecarbon's ``SystemCPULoadMeter``
  counts it). The 10 % idle floor is codecarbon's ("minimum power consumption is 10 % of TDP").
  codecarbon 3 raises u to the third power between its 15-s readings; this source stays linear
  in u, because only a linear model integrates exactly from cumulative busy time, which makes it
  a counter that is exact for any window, however short, without sampling:
  E(t) = TDP × (0.1 × wall_s + 0.9 × ∫u dt).
* ``ram``: a constant ``ram_w_per_gb`` (codecarbon's 0.375 W per GiB) × installed memory.

The TDP is ``tdp_w`` if given, else codecarbon's shipped CPU table matched to this CPU's model
name with codecarbon's own matching rules (re-implemented over the CSV: importing codecarbon
costs pandas and a tenth of a second), else codecarbon's default of 4 W per logical CPU.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import re
import time
from pathlib import Path

import psutil

from harness.errors import HarnessError
from harness.hardware import cpu_model_name, socket_count
from harness.sensors.base import ESTIMATE, ESTIMATED, OK, DomainStatus, Source

IDLE_FLOOR = 0.1  # codecarbon: "Minimum power consumption is 10% of TDP"
DEFAULT_W_PER_THREAD = 4.0  # codecarbon.core.cpu.DEFAULT_POWER_PER_CORE (per logical CPU)
RAM_W_PER_GB = 0.375  # codecarbon's RAM power per GiB
GIB = 1024**3
CLASSES = ("cpu", "memory")

# Indirections the tests replace with scripted sequences.
_clock = time.perf_counter
_cpu_times = psutil.cpu_times


def busy_and_total_s(times) -> tuple[float, float]:
    """CPU seconds spent busy and in all, over all CPUs (codecarbon's definition).

    Guest time is already inside user and nice on Linux, so it is taken out of the total.
    """
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    busy = total - times.idle - getattr(times, "iowait", 0.0)
    return busy, total


class EstimateSource(Source):
    """A TDP × utilisation CPU estimate (``cpu``) and a per-GiB RAM estimate (``ram``)."""

    name = "estimate"
    method = ESTIMATED
    update_period_s = 0.01  # psutil.cpu_times counts in clock ticks (USER_HZ = 100)

    def __init__(
        self,
        classes: tuple[str, ...] | list[str] = CLASSES,
        tdp_w: float | None = None,
        ram_w_per_gb: float = RAM_W_PER_GB,
    ):
        unknown = [c for c in classes if c not in CLASSES]
        if unknown or not classes:
            raise HarnessError(
                f"estimate: classes must be some of {', '.join(CLASSES)}, not {list(classes)}"
            )
        if tdp_w is not None and not tdp_w > 0:
            raise HarnessError(f"tdp_w must be a positive number of watts, not {tdp_w}")
        if not ram_w_per_gb >= 0:
            raise HarnessError(f"ram_w_per_gb must be zero or more, not {ram_w_per_gb}")
        self.classes = tuple(dict.fromkeys(classes))
        self.tdp_w = tdp_w
        self.ram_w_per_gb = ram_w_per_gb
        #: where the TDP came from, in words (set by probe)
        self.tdp_source = ""
        self.ram_w = 0.0
        self._opened = False

    # ------------------------------------------------------------------ probe
    def probe(self) -> list[DomainStatus]:
        rows = []
        if "cpu" in self.classes:
            if self.tdp_w is None or not self.tdp_source:
                self.tdp_w, self.tdp_source = resolve_tdp(self.tdp_w)
            reason = (
                f"estimated: TDP {self.tdp_w:g} W × ({IDLE_FLOOR:g} + {1 - IDLE_FLOOR:g} × "
                f"system CPU utilisation); {self.tdp_source}"
            )
            rows.append(DomainStatus(self.name, "cpu", ESTIMATE, OK, reason))
        if "memory" in self.classes:
            gib = psutil.virtual_memory().total / GIB
            self.ram_w = self.ram_w_per_gb * gib
            reason = (
                f"estimated: {self.ram_w_per_gb:g} W/GiB × {gib:.1f} GiB installed = "
                f"{self.ram_w:.2f} W, constant"
            )
            rows.append(DomainStatus(self.name, "ram", ESTIMATE, OK, reason))
        return rows

    def counter_domains(self) -> list[str]:
        return [{"cpu": "cpu", "memory": "ram"}[c] for c in self.classes]

    # ------------------------------------------------------------------ counter
    def open(self) -> None:
        if "cpu" in self.classes and not self.tdp_source:
            self.probe()
        if "memory" in self.classes and not self.ram_w:
            self.probe()
        t = _clock()
        busy, total = busy_and_total_s(_cpu_times()) if "cpu" in self.classes else (0.0, 0.0)
        self._t0 = t
        # the utilisation integral is committed up to _t_c, where the CPU times were _busy_c/_total_c
        self._t_c, self._busy_c, self._total_c = t, busy, total
        self._busy_integral_s = 0.0
        self._opened = True

    def read_energy_j(self) -> dict[str, float]:
        if not self._opened:
            self.open()
        t = _clock()
        out: dict[str, float] = {}
        if "cpu" in self.classes:
            busy, total = busy_and_total_s(_cpu_times())
            d_total = total - self._total_c
            # CPU times move in 10 ms ticks: until the total has moved, the utilisation of the
            # stretch since _t_c is unknown and only its floor is counted; the busy share of the
            # whole stretch is added once the times move, so the counter never goes backwards.
            if d_total > 0:
                u = min(max((busy - self._busy_c) / d_total, 0.0), 1.0)
                self._busy_integral_s += u * max(t - self._t_c, 0.0)
                self._t_c, self._busy_c, self._total_c = t, busy, total
            wall_s = t - self._t0
            out["cpu"] = self.tdp_w * (
                IDLE_FLOOR * wall_s + (1.0 - IDLE_FLOOR) * self._busy_integral_s
            )
        if "memory" in self.classes:
            out["ram"] = self.ram_w * (t - self._t0)
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
