"""``harness sensors --check``: watch each usable domain for a few seconds and judge it.

For every measuring source with a usable domain, the domains are read about every millisecond
for ``watch_s`` seconds. Per domain this gives:

* the update period: the mean time between seen changes (NVML's counter ~100 ms, RAPL ~1 ms);
* the resolution: the smallest step seen;
* mirrored pairs: counters of one source whose every step was the same (one counter, two names);
* counter against power, where a source has both (NVML total energy beside its power reading):
  the counter's joules between its first and last seen change against the power integrated over
  the same span, which must agree within ``AGREEMENT`` over at least ``MIN_AGREEMENT_S``;
* a verdict: ``ok``, ``warn`` (a mirror, a span too short to judge), or ``fail`` (a counter that
  never moved, reads that kept failing, counter and power apart by more than ``AGREEMENT``).

A source with nothing usable is one line saying why (``none``), which is not a failure.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

from harness.sensors import MEASURING, OK, create
from harness.sensors.base import Source

DEFAULT_WATCH_S = 5.0
READ_INTERVAL_S = 0.001
AGREEMENT = 0.02
MIN_AGREEMENT_S = 5.0
#: reads of a domain that may fail in a watch before it fails its check
MAX_FAILED_SHARE = 0.1


@dataclass
class CheckResult:
    """The check of one domain, or of a source with no usable domain (``domain`` None)."""

    source: str
    domain: str | None
    verdict: str  # ok | warn | fail | none
    kind: str = ""
    update_period_s: float | None = None
    resolution: float | None = None
    unit: str = ""
    mirrors: list[str] = field(default_factory=list)
    counter_vs_power: float | None = None  # relative difference, counter against power
    watched_s: float = 0.0
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        if self.domain is None:
            return f"{self.source}: no usable domain: {self.reason}"
        parts = []
        if self.update_period_s is not None:
            parts.append(f"update period {self.update_period_s * 1000:.1f} ms")
        if self.resolution is not None:
            parts.append(f"resolution {self.resolution:.3g} {self.unit}")
        if self.mirrors:
            parts.append(f"mirrors {', '.join(self.mirrors)}")
        if self.counter_vs_power is not None:
            parts.append(f"counter vs power {self.counter_vs_power * 100:+.2f} %")
        detail = "; ".join(parts)
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.source} {self.domain}: {self.verdict}{reason}; {detail}".rstrip("; ")


class _Series:
    """Changes seen in one domain's readings."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.changes: list[tuple[float, float]] = []  # (t, value) at each seen change
        self.steps: list[float] = []
        self.reads = 0
        self.failed = 0

    def see(self, t: float, value: float) -> None:
        self.reads += 1
        if self.last is not None and value != self.last:
            self.steps.append(value - self.last)
            self.changes.append((t, value))
        elif self.last is None:
            self.changes.append((t, value))
        self.last = value

    def period_s(self) -> float | None:
        """The median time between changes: a read delayed past an update (a busy machine) merges
        two updates into one change, which would stretch a mean; most intervals stay one period."""
        seen = self.changes[1:]  # the first entry is the first read, not a change
        if len(seen) < 2:
            return None
        return statistics.median(b[0] - a[0] for a, b in zip(seen, seen[1:], strict=False))


def check_all(watch_s: float = DEFAULT_WATCH_S) -> list[CheckResult]:
    """The checks of every measuring source, in registry order."""
    out: list[CheckResult] = []
    for name in MEASURING:
        source = create(name)
        if not source.installed():
            continue
        try:
            rows = source.probe()
            usable = [r for r in rows if r.status == OK]
            if not usable:
                reason = "; ".join(dict.fromkeys(r.reason for r in rows if r.reason)) or "none"
                out.append(CheckResult(name, None, "none", reason=reason))
                continue
            source.open()
            out += watch(source, watch_s, {r.domain: r.kind for r in usable})
        finally:
            source.close()
    return out


def watch(source: Source, watch_s: float, kinds: dict[str, str]) -> list[CheckResult]:
    """Read ``source`` for ``watch_s`` seconds and judge each of its domains."""
    counters, powers = source.counter_domains(), source.power_domains()
    series = {d: _Series() for d in [*counters, *powers]}
    check_power = getattr(source, "check_power_w", None)
    power_trace: dict[str, list[tuple[float, float]]] = {d: [] for d in counters}
    t0 = time.perf_counter()
    end = t0 + watch_s
    while True:
        t = time.perf_counter()
        values = {**source.read_energy_j(), **source.read_power_w()}
        for d, s in series.items():
            if d in values:
                s.see(t, values[d])
            else:
                s.failed += 1
        if check_power is not None:
            for d, w in check_power().items():
                power_trace[d].append((t, w))
        source.events.clear()
        source.read_errors.clear()
        source.gone.clear()
        if t >= end:
            break
        time.sleep(READ_INTERVAL_S)
    watched_s = time.perf_counter() - t0
    mirrors = _mirrors({d: series[d] for d in counters})
    for note in source.window_notes():  # die zones a source already counts once
        mirrors.setdefault(note.split(": ", 1)[0], []).append(note.split(": ", 1)[1])
    results = []
    for d, s in series.items():
        counter = d in counters
        r = CheckResult(
            source.name,
            d,
            "ok",
            kind=kinds.get(d, ""),
            update_period_s=s.period_s(),
            resolution=min((abs(x) for x in s.steps if x), default=None),
            unit="J" if counter else "W",
            mirrors=mirrors.get(d, []),
            watched_s=watched_s,
        )
        problems, doubts = [], []
        if s.failed > MAX_FAILED_SHARE * max(s.failed + s.reads, 1):
            problems.append(f"{s.failed} of {s.failed + s.reads} reads failed")
        if counter and not s.steps:
            problems.append(f"the counter did not move in {watched_s:.1f} s (frozen?)")
        if r.mirrors:
            doubts.append("counts the same energy as another domain")
        if counter and power_trace.get(d):
            r.counter_vs_power, span_s = _agreement(s, power_trace[d])
            if r.counter_vs_power is None or span_s < MIN_AGREEMENT_S:
                doubts.append(f"counter against power over {span_s:.1f} s only: too short")
            elif abs(r.counter_vs_power) > AGREEMENT:
                problems.append(
                    f"counter and integrated power differ by {r.counter_vs_power * 100:+.1f} % "
                    f"over {span_s:.1f} s"
                )
        if problems:
            r.verdict, r.reason = "fail", "; ".join(problems + doubts)
        elif doubts:
            r.verdict, r.reason = "warn", "; ".join(doubts)
        results.append(r)
    return results


def _mirrors(counters: dict[str, _Series]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    names = list(counters)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            sa, sb = counters[a].steps, counters[b].steps
            if sa and sa == sb:
                out.setdefault(a, []).append(b)
                out.setdefault(b, []).append(a)
    return out


def _agreement(s: _Series, power: list[tuple[float, float]]) -> tuple[float | None, float]:
    """Counter against power between the first and last seen change (the first entry of
    ``s.changes`` is the first read, not a change)."""
    return counter_vs_power(s.changes[1:], power)


def counter_vs_power(
    changes: list[tuple[float, float]], power: list[tuple[float, float]]
) -> tuple[float | None, float]:
    """(counter − integrated power) / integrated power between the first and last seen change.

    ``changes``: (t, cumulative joules) where the counter was seen to change, in time order;
    ``power``: (t, watts) samples of the same device, in time order, integrated with the
    trapezoid rule over the span between those two changes. Returns the relative difference
    (None: fewer than two changes, or no power in the span) and the span in seconds. The meter
    (a window's ``counter_vs_power``) and ``harness sensors --check`` both judge with it.
    """
    if len(changes) < 2:
        return None, 0.0
    (ta, ea), (tb, eb) = changes[0], changes[-1]
    joules = 0.0
    for (t1, w1), (t2, w2) in zip(power, power[1:], strict=False):
        lo, hi = max(t1, ta), min(t2, tb)
        if hi > lo:
            joules += 0.5 * (w1 + w2) * (hi - lo)
    if joules <= 0:
        return None, tb - ta
    return (eb - ea - joules) / joules, tb - ta
