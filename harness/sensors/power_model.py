"""Power models for a CPU and its memory where nothing measures them (the estimate source).

The best public model for the CPU in hand, in this order:

1. ``boaviztapi-tdp``: a known TDP (``tdp_w``, or codecarbon's CPU table matched to the model
   name) shaped by boaviztapi's consumption profile. boaviztapi fits its log model
   P(x) = a·ln(b·(x + c)) + d (x: load in %) through the points (0, 12 %), (10, 32 %),
   (50, 75 %), (100, 102 %) of TDP. Since a·ln(b·(x + c)) + d = a·ln(x + c) + (a·ln b + d), the
   fit is P(x) = TDP × (α·ln(x + c) + δ): fitted once here by least squares (a 1-D search over
   c, linear in α and δ), which is what boaviztapi's own ``CPUConsumptionProfileModel`` gives
   for any TDP (tests/test_carbon.py checks it against boaviztapi).
2. ``ccf-vcpu``: a virtual machine (the ``hypervisor`` CPU flag) whose TDP is unknown: Cloud
   Carbon Footprint's per-vCPU minimum and maximum watts for the CPU's microarchitecture
   (SPECpower-derived, ccf-coefficients), else their cloud average:
   P = vCPUs × (W_min + (W_max − W_min) × u).
3. ``default-tdp``: neither: codecarbon's 4 W per thread as the TDP, shaped as in 1.

Where cpufreq shows the clock, the part above idle is scaled by the mean current frequency over
the maximum (dynamic power grows with the clock; at a capped clock the same load draws less).

Memory (boaviztapi's RAM model): per DIMM, full-load power 3.0 W + 0.055 W/GB × DIMM size, of
which 70 % is drawn at idle; DIMMs of the memory type's typical size (DDR4: 32 GB) unless known.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from harness.sysfs import sysfs_path

#: boaviztapi CPUConsumptionProfileModel._TDP_RATIOS_WORKLOAD / _TDP_RATIOS
TDP_LOADS_PCT = (0.0, 10.0, 50.0, 100.0)
TDP_RATIOS = (0.12, 0.32, 0.75, 1.02)
#: boaviztapi RAMConsumptionProfileModel
DIMM_BASE_W = 3.0
DIMM_W_PER_GB = 0.055
DIMM_IDLE_RATIO = 0.7
TYPICAL_DIMM_GB = {"DDR3": 16, "DDR4": 32, "DDR5": 64}
DEFAULT_MEMORY_TYPE = "DDR4"

#: Cloud Carbon Footprint, ccf-coefficients: (min W, max W) per vCPU by microarchitecture
CCF_VCPU_W = {
    "Haswell": (1.90, 5.99),
    "Broadwell": (0.71, 3.54),
    "Skylake": (0.64, 4.05),
    "Cascade Lake": (0.64, 3.80),
    "EPYC 1st Gen": (0.82, 2.55),
    "EPYC 2nd Gen": (0.47, 1.64),
    "EPYC 3rd Gen": (0.45, 1.87),
}
#: CCF's average over AWS's microarchitectures, for a VM whose microarchitecture is unknown
CCF_AVERAGE_VCPU_W = (0.74, 3.5)

#: model-name patterns of the microarchitectures above (first match wins)
_MICROARCH = [
    (r"EPYC\s+7\d\d1", "EPYC 1st Gen"),
    (r"EPYC\s+7\d\d2", "EPYC 2nd Gen"),
    (r"EPYC\s+7\d\d3", "EPYC 3rd Gen"),
    (r"Xeon.*(Platinum|Gold|Silver|Bronze)\s+\d1\d\d", "Skylake"),
    (r"Xeon.*(Platinum|Gold|Silver|Bronze)\s+\d2\d\d", "Cascade Lake"),
    (r"Xeon.*E5-\d{4}\s*v4", "Broadwell"),
    (r"Xeon.*E5-\d{4}\s*v3", "Haswell"),
]


def microarchitecture(model: str | None) -> str | None:
    for pattern, name in _MICROARCH:
        if model and re.search(pattern, model):
            return name
    return None


@functools.lru_cache(maxsize=1)
def tdp_curve() -> tuple[float, float, float]:
    """(α, c, δ) of P(x)/TDP = α·ln(x + c) + δ through boaviztapi's TDP points, least squares."""

    def fit(c: float) -> tuple[float, float, float]:
        xs = [math.log(x + c) for x in TDP_LOADS_PCT]
        n = len(xs)
        mx, my = sum(xs) / n, sum(TDP_RATIOS) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        alpha = sum((x - mx) * (y - my) for x, y in zip(xs, TDP_RATIOS, strict=True)) / sxx
        delta = my - alpha * mx
        err = sum(
            (alpha * x + delta - y) ** 2 for x, y in zip(xs, TDP_RATIOS, strict=True)
        )  # fmt: skip
        return err, alpha, delta

    # golden-section search over log c (the error is unimodal in c on this range)
    lo, hi = math.log(1e-3), math.log(1e4)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    for _ in range(200):
        if fit(math.exp(a))[0] < fit(math.exp(b))[0]:
            hi = b
        else:
            lo = a
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    c = math.exp((lo + hi) / 2)
    _, alpha, delta = fit(c)
    return alpha, c, delta


def tdp_fraction(u: float) -> float:
    """boaviztapi's CPU power at utilisation ``u`` (0..1) as a fraction of the TDP."""
    alpha, c, delta = tdp_curve()
    return alpha * math.log(100.0 * min(max(u, 0.0), 1.0) + c) + delta


@dataclass
class CpuModel:
    """A CPU power model: watts at utilisation u (0..1), and its inputs in words."""

    kind: str  # boaviztapi-tdp | ccf-vcpu | default-tdp | codecarbon
    tdp_w: float | None = None
    vcpus: int = 1
    vcpu_w: tuple[float, float] | None = None
    inputs: str = ""

    def power_w(self, u: float, freq_ratio: float = 1.0) -> float:
        idle = self.idle_w()
        if self.kind == "codecarbon":
            full = self.tdp_w * (0.1 + 0.9 * min(max(u, 0.0), 1.0))
        elif self.kind == "ccf-vcpu":
            lo, hi = self.vcpu_w
            full = self.vcpus * (lo + (hi - lo) * min(max(u, 0.0), 1.0))
        else:
            full = self.tdp_w * tdp_fraction(u)
        return idle + (full - idle) * min(max(freq_ratio, 0.0), 1.0)

    def idle_w(self) -> float:
        if self.kind == "codecarbon":
            return self.tdp_w * 0.1
        if self.kind == "ccf-vcpu":
            return self.vcpus * self.vcpu_w[0]
        return self.tdp_w * tdp_fraction(0.0)

    def describe(self) -> str:
        if self.kind == "codecarbon":
            return f"codecarbon's model: TDP {self.tdp_w:g} W × (0.1 + 0.9 × u); {self.inputs}"
        if self.kind == "ccf-vcpu":
            lo, hi = self.vcpu_w
            return (
                f"Cloud Carbon Footprint per-vCPU model: {self.vcpus} vCPU × ({lo:g} + "
                f"{hi - lo:.3g} × u) W; {self.inputs}"
            )
        return (
            f"boaviztapi consumption profile: TDP {self.tdp_w:g} W × profile(u) "
            f"({self.idle_w():.3g} W idle, {self.power_w(1.0):.3g} W at full load); "
            f"{self.inputs}"
        )


def is_virtual_machine() -> bool:
    from harness.hardware import is_virtual_machine as on_a_vm

    return on_a_vm()


def memory_w(total_gb: float, memory_type: str | None = None) -> tuple[float, float, str]:
    """(idle W, full-load W, inputs in words) of ``total_gb`` of memory by boaviztapi's model."""
    kind = memory_type or DEFAULT_MEMORY_TYPE
    dimm_gb = TYPICAL_DIMM_GB.get(kind, TYPICAL_DIMM_GB[DEFAULT_MEMORY_TYPE])
    dimms = total_gb / dimm_gb
    full = dimms * (DIMM_BASE_W + DIMM_W_PER_GB * dimm_gb)
    why = (
        f"{total_gb:.1f} GB as {dimms:.3g} {kind} DIMMs of {dimm_gb} GB "
        f"({'given' if memory_type else 'memory type unknown: boaviztapi default'}); "
        f"{DIMM_BASE_W:g} W + {DIMM_W_PER_GB:g} W/GB per DIMM at full load, "
        f"{DIMM_IDLE_RATIO:.0%} of it idle (boaviztapi)"
    )
    return full * DIMM_IDLE_RATIO, full, why


class Cpufreq:
    """Mean current clock over the maximum, from cpufreq (HARNESS_SYSFS); None where absent."""

    def __init__(self) -> None:
        from harness.sensors.thermal import MAX_POLICIES

        # the policies, as the thermal state reads them (a few stand for a big machine)
        base = sysfs_path("devices", "system", "cpu", "cpufreq")
        self.pairs = []
        for d in sorted(base.glob("policy*"))[:MAX_POLICIES] if base.is_dir() else []:
            cur, top = d / "scaling_cur_freq", d / "cpuinfo_max_freq"
            if cur.is_file() and top.is_file():
                self.pairs.append((cur, top))

    #: the clock is re-read at most this often (the sampler reads the estimate at sample_hz)
    REREAD_S = 0.5

    def ratio(self) -> float | None:
        if not self.pairs:
            return None
        import time

        now = time.monotonic()
        cached = getattr(self, "_cached", None)
        if cached is not None and now - cached[0] < self.REREAD_S:
            return cached[1]
        value = self._read_ratio()
        self._cached = (now, value)
        return value

    def _read_ratio(self) -> float | None:
        ratios = []
        for cur, top in self.pairs:
            try:
                c, t = int(cur.read_text().strip()), int(top.read_text().strip())
            except (OSError, ValueError):
                continue
            if t > 0:
                ratios.append(min(c / t, 1.0))
        return sum(ratios) / len(ratios) if ratios else None
