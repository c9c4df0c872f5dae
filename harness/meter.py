"""Windows of energy over the sensors of one machine, checked as they are read.

Counters (RAPL, NVML total energy, hwmon energy, estimates) are read at window edges, so a window
costs a few file reads. Power-only domains are sampled by one background thread and integrated
with the trapezoid rule; at a window edge the meter takes one extra reading so the integral ends
exactly there. The same thread polls wrapping counters often enough never to miss a wrap, and keeps
a power trace (t_s, domain, watts) of every domain when ``sample_hz`` is set.

Nothing read is trusted blindly (ARCHITECTURE.md, "Sensors and domains"): a domain whose reads
keep failing is dropped from the windows it was in and the rest is kept; a whole-device meter
that reads 0 or freezes while the components draw power yields the total to them; a counter that
steps back is a reset unless the step fits a wrap; a coarse counter (NVML's ~100 ms) is traced
over whole update periods only. Each window's ``warnings`` say, per domain, what was noticed.
"""

from __future__ import annotations

import bisect
import math
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from harness.errors import HarnessError, SensorError
from harness.sensors import (
    CROSSCHECK,
    ESTIMATED,
    MEASURED,
    OK,
    Source,
    estimate_options,
    resolve,
)
from harness.sensors.check import counter_vs_power
from harness.sensors.domains import combined_method, domain_class, total_domains

#: consecutive failed reads (each already retried by the reader) after which a domain is lost
LOST_AFTER_FAILURES = 3
#: a window shorter than this many update periods of a domain in its total gets a warning
MIN_UPDATE_PERIODS = 10
#: a counter that stays still this many update periods (and 1 s) while its source moves: frozen
FROZEN_UPDATE_PERIODS = 100
#: a domain is traced over whole update periods when its period exceeds this many sampler ticks
COARSE_TICKS = 2
#: counters updating this rarely or less are coarse: the sampler times their steps
COARSE_MIN_S = 0.02
#: seconds a window's end waits, at most, for the stated update periods read in the background
PERIODS_WAIT_S = 5.0
#: a counter judged against its integrated power needs a span whose timing uncertainty (when its
#: first and last change were seen) is at most this share of it: half the 2 % it is judged by
COUNTER_POWER_TIMING = 0.01
#: the samples kept for judging counters against power are pruned, between windows, once this
#: many ticks have added to them (pruning at every window's end would cost each window)
PRUNE_AT = 256


@dataclass
class Measurement:
    """Energy and time of one window."""

    name: str
    duration_s: float
    energy_j: dict[str, float]
    total_j: float
    method: str
    sources: list[str]
    #: the domains summed into ``total_j``
    total_domains: list[str] = field(default_factory=list)
    #: per domain: measured or estimated
    domain_methods: dict[str, str] = field(default_factory=dict)
    #: per domain: the source that read it
    domain_sources: dict[str, str] = field(default_factory=dict)
    #: cross-check figures never added to the total, by source name (codecarbon)
    crosscheck_j: dict[str, float] = field(default_factory=dict)
    #: highest sampled total power inside the window (None when nothing was sampled)
    peak_power_w: float | None = None
    start_s: float = 0.0  # seconds since the meter started
    end_s: float = 0.0
    start_unix: float = 0.0
    #: what was noticed in this window, each text naming its domain (reset, lost, frozen...)
    warnings: list[str] = field(default_factory=list)
    #: hottest device temperature at the window's start and end (None: nothing reports it)
    temp_start_c: float | None = None
    temp_end_c: float | None = None
    #: mean clock (GPU SM clock, else CPU frequency) and summed enforced power limit at the end
    clock_mhz: float | None = None
    power_limit_w: float | None = None
    #: the CPU's frequency cap at the end (highest cpufreq scaling_max_freq), where readable
    cpu_max_mhz: float | None = None
    #: per device: {"start": {...}, "end": {...}} as the devices reported them
    thermal: dict[str, dict] = field(default_factory=dict)
    #: per counter domain whose source also gives its power, sampled in the background (NVML's
    #: total energy beside its instant power): (counter − integrated power) / integrated power
    #: between the counter's first and last change seen in the window; None where the window
    #: is too short to judge (``Meter.counter_vs_power``)
    counter_vs_power: dict[str, float | None] = field(default_factory=dict)

    @property
    def avg_power_w(self) -> float | None:
        return self.total_j / self.duration_s if self.duration_s > 0 else None

    def dynamic_j(self, idle_w: dict[str, float] | None) -> float | None:
        """Total energy less what the total's domains draw when idle over the same time."""
        if not idle_w:
            return None
        if any(d not in idle_w for d in self.total_domains):
            return None
        return self.total_j - sum(idle_w[d] for d in self.total_domains) * self.duration_s

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "duration_s": self.duration_s,
            "energy_j": dict(self.energy_j),
            "total_j": self.total_j,
            "method": self.method,
            "sources": list(self.sources),
            "total_domains": list(self.total_domains),
            "domain_methods": dict(self.domain_methods),
            "crosscheck_j": dict(self.crosscheck_j),
            "peak_power_w": self.peak_power_w,
            "avg_power_w": self.avg_power_w,
            "warnings": list(self.warnings),
            "temp_start_c": self.temp_start_c,
            "temp_end_c": self.temp_end_c,
            "clock_mhz": self.clock_mhz,
            "power_limit_w": self.power_limit_w,
            "cpu_max_mhz": self.cpu_max_mhz,
            "counter_vs_power": dict(self.counter_vs_power),
        }


class Window:
    """An open (then closed) window; ``measurement`` is set when it ends."""

    __slots__ = ("name", "_t0", "_snap0", "_thermal0", "measurement")

    def __init__(self, name: str, t0: float, snap0: dict[str, float], thermal0: dict):
        self.name = name
        self._t0 = t0
        self._snap0 = snap0
        self._thermal0 = thermal0
        self.measurement: Measurement | None = None


class _PowerIntegral:
    __slots__ = ("t", "w", "joules", "changed_t")

    def __init__(self, t: float, w: float):
        self.t, self.w, self.joules, self.changed_t = t, w, 0.0, t

    def add(self, t: float, w: float) -> float:
        if t > self.t:
            self.joules += 0.5 * (w + self.w) * (t - self.t)
            if w != self.w:
                self.changed_t = t
            self.t, self.w = t, w
        return self.joules


class _Changes:
    """When a coarse counter was seen to change: its update period, measured as it runs."""

    __slots__ = ("value", "first_t", "last_t", "count")

    def __init__(self, value: float):
        self.value, self.first_t, self.last_t, self.count = value, None, None, 0

    def see(self, t: float, value: float) -> None:
        if value != self.value:
            self.value = value
            if self.first_t is None:
                self.first_t = t
            else:
                self.count += 1
            self.last_t = t

    def period_s(self) -> float | None:
        if self.count < 4 or self.first_t is None:
            return None
        return (self.last_t - self.first_t) / self.count


def _first(pair: tuple[float, float]) -> float:
    return pair[0]


def _read_gap(samples: list[tuple[float, float]], t: float) -> float:
    """Seconds between the sample at ``t`` and the one before it (a change seen at ``t`` happened
    at most that long before)."""
    i = bisect.bisect_left(samples, t, key=_first)
    return t - samples[i - 1][0] if i > 0 else 0.0


def _dedupe(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(texts))


class Meter:
    """Energy windows over a set of sources (see ARCHITECTURE.md, Python interface).

    ``sensors``: ``"auto"``, a list of source names, or a list of ``Source`` objects.
    ``sample_hz``: rate of the background sampler (power domains and traces); ``None`` reads
    counters only and leaves power-only domains out. ``max_temp_drift_c``: a window whose
    hottest device warms or cools by more gets a warning.
    """

    def __init__(
        self,
        sensors: str | list = "auto",
        sample_hz: float | None = 10,
        *,
        tdp_w: float | None = None,
        sync_gpu: bool = True,
        keep_trace: bool = True,
        max_temp_drift_c: float | None = None,
        estimate: dict | None = None,
    ):
        if sample_hz is not None and sample_hz <= 0:
            raise HarnessError(f"sample_hz must be positive or None, not {sample_hz}")
        if max_temp_drift_c is not None and not max_temp_drift_c > 0:
            raise HarnessError(f"max_temp_drift_c must be positive, not {max_temp_drift_c}")
        if isinstance(sensors, list) and sensors and all(isinstance(s, Source) for s in sensors):
            sources = list(sensors)
        else:
            # estimate: the estimate source's options ({"model": ..., "attribution": ...})
            sources = resolve(sensors, tdp_w=tdp_w, **estimate_options(estimate))
        self.sample_hz = sample_hz
        self.sync_gpu = sync_gpu
        self.keep_trace = keep_trace
        self.max_temp_drift_c = max_temp_drift_c
        self._lock = threading.RLock()
        self._open: dict[str, Window] = {}
        self._t_start = time.perf_counter()
        self._unix_start = time.time()
        self.statuses = []
        #: the last thing that went wrong in the background sampler (it keeps going)
        self.sampler_error: str | None = None
        # (source, domains still read): the hot path of a snapshot
        self._counter_sources: list[tuple[Source, list[str]]] = []
        self._power_sources: list[tuple[Source, list[str]]] = []
        self._crosscheck_sources: list[Source] = []
        self._thermal_sources: list[Source] = []
        self._note_sources: list[Source] = []
        self.domain_methods: dict[str, str] = {}
        self.domain_sources: dict[str, str] = {}
        self._contains_gpus: set[str] = set()
        #: per domain: seconds between updates (assumed by the source at start, then what the
        #: hardware states, read in the background, then what the sampler sees)
        self.update_periods_s: dict[str, float] = {}
        self._fails: dict[str, int] = {}
        self._last_error: dict[str, str] = {}
        #: domain -> (meter time it was lost, why)
        self.lost: dict[str, tuple[float, str]] = {}
        self._events: list[tuple[float, str]] = []
        for source in sources:
            rows, source.probed = source.probed or source.probe(), None
            self.statuses += rows
            if not any(r.status == OK for r in rows):
                source.close()
                continue
            source.open()
            if source.method == CROSSCHECK:
                self._crosscheck_sources.append(source)
                continue
            # labelling fails closed: measured only where the source says so explicitly
            method = MEASURED if source.method == MEASURED else ESTIMATED
            counters = source.counter_domains()
            powers = source.power_domains() if sample_hz else []
            for d in [*counters, *powers]:
                if d in self.domain_methods:
                    raise HarnessError(
                        f"domain {d} is read by both {self.domain_sources[d]} and {source.name}; "
                        "list only one of them in sensors"
                    )
                self.domain_methods[d] = method
                self.domain_sources[d] = source.name
                self.update_periods_s[d] = source.domain_update_period_s(d)
            self._contains_gpus |= set(source.contains_gpus) & set(counters + powers)
            if counters:
                self._counter_sources.append((source, list(counters)))
            if powers:
                self._power_sources.append((source, list(powers)))
            if type(source).thermal is not Source.thermal:
                self._thermal_sources.append(source)
            if type(source).window_notes is not Source.window_notes:
                self._note_sources.append(source)
        from harness.sensors.thermal import CpuThermal

        cpu_thermal = CpuThermal.find()
        if cpu_thermal is not None:
            self._thermal_sources.append(cpu_thermal)
        self._total_domains = total_domains(self.domain_methods, self._contains_gpus)
        self.method = combined_method(self.domain_methods, self._total_domains)
        self._integrals: dict[str, _PowerIntegral] = {}
        now = self._now()
        for source, domains in self._power_sources:
            for d, w in self._read(source, domains, source.read_power_w, now).items():
                self._integrals[d] = _PowerIntegral(now, w)
        # trace: ticks of (t_s, {domain: watts})
        self._trace_t: list[float] = []
        self._trace_w: list[dict[str, float]] = []
        self._last_tick: tuple[float, dict[str, float]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        period = self._sampler_period()
        self._tick_s = period
        # coarse counters: traced from one seen change to the next, over whole update periods
        self._changes: dict[str, _Changes] = {}
        self._anchor: dict[str, tuple[float, float]] = {}
        self._held_w: dict[str, float] = {}
        self._gap_s = max(10 * period, 0.5) if period else None
        # counter domains whose source reads their power too (check_power_w: a GPU's instant
        # power beside its energy counter): sampled only where the sampler runs anyway
        self._cvp_sources: list[tuple[Source, list[str]]] = []
        self._cvp_last: dict[str, float] = {}  # each counter's last value the sampler saw
        self._cvp_changes: dict[str, list[tuple[float, float]]] = {}  # (t, joules) at changes
        self._cvp_power: dict[str, list[tuple[float, float]]] = {}  # (t, watts) each tick
        self._cvp_ticks = 0  # ticks since the samples were last pruned
        if period is not None:
            first = self._read_counters(now)
            self._last_tick = (now, first)
            if sample_hz:
                self._cvp_sources = [
                    (s, domains)
                    for s, domains in self._counter_sources
                    if getattr(s, "check_power_w", None) is not None
                ]
                self._cvp_last = {
                    d: first[d] for _s, domains in self._cvp_sources for d in domains if d in first
                }
            for _source, domains in self._counter_sources:
                for d in domains:
                    if self.update_periods_s[d] > COARSE_TICKS * period and d in first:
                        self._changes[d] = _Changes(first[d])
                        self._anchor[d] = (now, first[d])
            self._thread = threading.Thread(
                target=self._sample_loop, args=(period,), name="harness-meter", daemon=True
            )
            self._thread.start()
        # what the hardware states of its update periods is read after starting, never before
        self._periods_known = threading.Event()
        learners = [
            s
            for s, _ in self._counter_sources + self._power_sources
            if type(s).learn_update_periods is not Source.learn_update_periods
        ]
        if learners:
            threading.Thread(
                target=self._learn_periods,
                args=(list(dict.fromkeys(learners)),),
                name="harness-meter-periods",
                daemon=True,
            ).start()
        else:
            self._periods_known.set()

    def _learn_periods(self, sources: list[Source]) -> None:
        """The stated update periods, where the sampler has not already seen a domain's."""
        try:
            for source in sources:
                try:
                    learned = source.learn_update_periods()
                except Exception:  # noqa: BLE001 - a period unknown stays the assumed one
                    continue
                with self._lock:
                    for d, period_s in learned.items():
                        seen = self._changes.get(d)
                        if d in self.update_periods_s and (seen is None or seen.period_s() is None):
                            self.update_periods_s[d] = period_s
        finally:
            self._periods_known.set()

    # ------------------------------------------------------------------ reading
    def _now(self) -> float:
        return time.perf_counter() - self._t_start

    def _sampler_period(self) -> float | None:
        """The sampler's tick: ``sample_hz``, faster where a wrap must not be missed, and fast
        enough to time each step of a coarse counter (a third of its update period), so its
        trace can be cut into whole update periods rather than alias (NVML at 10 Hz)."""
        periods = [1.0 / self.sample_hz] if self.sample_hz else []
        periods += [p for s, _ in self._counter_sources if (p := s.poll_interval_s())]
        if not periods:
            return None
        tick = min(periods)
        if self.sample_hz and self.keep_trace:
            for _source, domains in self._counter_sources:
                for d in domains:
                    update_s = self.update_periods_s[d]
                    if COARSE_MIN_S <= update_s <= COARSE_TICKS * tick:
                        tick = min(tick, update_s / (COARSE_TICKS + 1))
        return tick

    def _read(self, source: Source, domains: list[str], read, t: float) -> dict[str, float]:
        """One source's values; failures and events are booked, lost domains left out."""
        try:
            values = read()
        except SensorError as e:  # the whole source failed this time
            values = {}
            for d in domains:
                source.read_errors.setdefault(d, str(e))
        if len(values) != len(domains) or self._fails or source.__dict__.get("_events"):
            self._book(source, domains, values, t)
        return values

    def _book(self, source: Source, domains: list[str], values: dict, t: float) -> None:
        for d in list(domains):
            if d in values:
                self._fails.pop(d, None)
                continue
            n = self._fails[d] = self._fails.get(d, 0) + 1
            why = source.read_errors.get(d) or "no reading"
            self._last_error[d] = why
            if n >= LOST_AFTER_FAILURES or d in source.gone:
                self.lost[d] = (t, why)
                self._fails.pop(d, None)
                domains.remove(d)
                source.drop(d)
        for d in [d for d in values if d in self.lost]:
            del values[d]
        for text in source.events:
            self._events.append((t, text))
        source.events.clear()
        source.read_errors.clear()
        source.gone.clear()

    def _read_counters(self, t: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for source, domains in self._counter_sources:
            out.update(self._read(source, domains, source.read_energy_j, t))
        return out

    def _snapshot(self, edge: bool = False) -> tuple[float, dict[str, float]]:
        """Cumulative joules of every domain read now. Holds the lock: sources are not thread-safe.

        A domain that failed this time is absent. At a window edge (``edge``) cross-check sources
        are read too, under their source name.
        """
        with self._lock:
            t = self._now()
            snap = self._read_counters(t)
            for source, domains in self._power_sources:
                for d, w in self._read(source, domains, source.read_power_w, t).items():
                    integral = self._integrals.get(d)
                    if integral is None:
                        integral = self._integrals[d] = _PowerIntegral(t, w)
                    elif self._gap_s is not None and t - integral.t > self._gap_s:
                        self._events.append(
                            (
                                t,
                                f"{d}: no reading for {t - integral.t:.1f} s (sampler gap); "
                                "power integrated across it",
                            )  # fmt: skip
                        )
                    snap[d] = integral.add(t, w)
            if edge:
                for source in self._crosscheck_sources:
                    try:
                        snap[source.name] = sum(source.read_energy_j().values())
                    except SensorError as e:
                        self._events.append((t, f"{source.name}: cross-check not read: {e}"))
            return t, snap

    def _sample_loop(self, period: float) -> None:
        next_t = time.perf_counter()
        while not self._stop.is_set():
            next_t += period
            delay = next_t - time.perf_counter()
            if delay > 0 and self._stop.wait(delay):
                break
            if delay < -period:  # fell behind (suspended): do not burst
                next_t = time.perf_counter()
            try:
                self._tick()
            except Exception as e:  # noqa: BLE001 - a bad tick is a gap, not the end of sampling
                self.sampler_error = f"{type(e).__name__}: {e}"
                with self._lock:
                    self._events.append((self._now(), f"sampler: a tick failed ({e})"))

    def _tick(self) -> None:
        t, snap = self._snapshot()
        with self._lock:
            if self._cvp_sources:
                self._sample_check_power(t, snap)
            for d, changes in self._changes.items():
                if d in snap:
                    changes.see(t, snap[d])
                    seen = changes.period_s()
                    if seen is not None:
                        self.update_periods_s[d] = seen
            if not self.keep_trace or self._last_tick is None:
                return
            t0, prev = self._last_tick
            dt = t - t0
            if dt <= 0:
                return
            watts = {}
            for d, e in snap.items():
                anchor = self._anchor.get(d)
                if anchor is None:
                    if d in prev:
                        watts[d] = (e - prev[d]) / dt
                    continue
                period_s = self.update_periods_s[d]
                if e != anchor[1]:
                    # the change was seen up to one tick late: count whole update periods
                    periods = max(1, round((t - anchor[0]) / period_s))
                    self._held_w[d] = (e - anchor[1]) / (periods * period_s)
                    self._anchor[d] = (t, e)
                if d in self._held_w:
                    watts[d] = self._held_w[d]
            self._trace_t.append(t)
            self._trace_w.append(watts)
            self._last_tick = (t, {**prev, **snap})

    def _sample_check_power(self, t: float, snap: dict[str, float]) -> None:
        """The power of counter domains that have both, and when each counter changed."""
        self._cvp_ticks += 1
        for source, domains in self._cvp_sources:
            try:
                watts = source.check_power_w()
            except SensorError:
                watts = {}
            for d in domains:
                e = snap.get(d)
                if e is not None and e != self._cvp_last.get(d):
                    if d in self._cvp_last:  # the first value seen is a read, not a change
                        self._cvp_changes.setdefault(d, []).append((t, e))
                    self._cvp_last[d] = e
                if d in watts:
                    self._cvp_power.setdefault(d, []).append((t, watts[d]))

    def _counter_vs_power(
        self, t0: float, t1: float, domains, periods: dict[str, float]
    ) -> dict[str, float | None]:
        """Per domain with both, its counter against its integrated sampled power in the window
        (``harness.sensors.check.counter_vs_power``, the one ``harness sensors --check`` uses).

        None where the span between the counter's first and last change seen in the window is
        under ``MIN_UPDATE_PERIODS`` update periods or 1 s, or too short for the times of those
        changes: each was seen up to one read late (at most the time since the read before it, or
        one update period), so the span may be off by that much; it must stay within
        ``COUNTER_POWER_TIMING`` of the span.
        """
        if t1 - t0 < 1.0:  # the span between changes is shorter still: nothing to judge
            return {d: None for d in domains if d in self._cvp_power}
        out: dict[str, float | None] = {}
        with self._lock:
            for d in domains:
                power = self._cvp_power.get(d)
                if not power:
                    continue
                changes = self._cvp_changes.get(d, [])
                lo = bisect.bisect_right(changes, t0, key=_first)
                seen = changes[lo : bisect.bisect_right(changes, t1, lo, key=_first)]
                lo = bisect.bisect_left(power, t0, key=_first)
                hi = bisect.bisect_right(power, t1, lo, key=_first)
                out[d] = None
                if len(seen) < 2:
                    continue
                rel, span_s = counter_vs_power(seen, power[lo:hi])
                ta, tb = seen[0][0], seen[-1][0]
                period = periods.get(d, 0.0)
                # each change was seen up to one read late: the span is off by at most the
                # larger lateness (both are late the same way)
                late_s = max(min(_read_gap(power, t), period or math.inf) for t in (ta, tb))
                need = max(MIN_UPDATE_PERIODS * period, 1.0, late_s / COUNTER_POWER_TIMING)
                if rel is not None and span_s >= need:
                    out[d] = rel
        return out

    def _sync_gpu(self) -> None:
        torch = sys.modules.get("torch")
        if torch is None or not self.sync_gpu:
            return
        cuda = getattr(torch, "cuda", None)
        if cuda is not None and cuda.is_initialized():
            for i in range(cuda.device_count()):
                cuda.synchronize(i)

    def _read_thermal(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for source in self._thermal_sources:
            try:
                out.update(source.thermal())
            except Exception:  # noqa: BLE001 - thermal state is context, never a failed window
                pass
        return out

    # ------------------------------------------------------------------ windows
    def begin(self, name: str) -> Window:
        """Open a window; names are unique among open windows."""
        self._sync_gpu()
        thermal0 = self._read_thermal() if self._thermal_sources else {}
        t, snap = self._snapshot(edge=True)
        with self._lock:
            if name in self._open:
                raise HarnessError(f"a window named {name!r} is already open")
            w = Window(name, t, snap, thermal0)
            self._open[name] = w
        return w

    def end(self, name: str) -> Measurement:
        """Close the window ``name`` and return its measurement."""
        self._sync_gpu()
        t1, snap1 = self._snapshot(edge=True)
        thermal1 = self._read_thermal() if self._thermal_sources else {}
        # the warnings below depend on the update periods: the stated ones, once read
        self._periods_known.wait(PERIODS_WAIT_S)
        with self._lock:
            w = self._open.pop(name, None)
            if w is None:
                raise HarnessError(f"no open window named {name!r}")
            t0, snap0 = w._t0, w._snap0
            warnings = [text for t, text in self._events if t0 < t <= t1]
            for source in self._note_sources:
                warnings += source.window_notes()
            lost = dict(self.lost)
            periods = dict(self.update_periods_s)
            if not self._open:  # nothing can need the older events any more
                self._events = [e for e in self._events if e[0] > t1]
        duration_s = t1 - t0
        energy: dict[str, float] = {}
        for d in self.domain_methods:
            if d in snap0 and d in snap1 and d not in lost:
                energy[d] = snap1[d] - snap0[d]
            elif d in lost:
                when = "mid-window" if lost[d][0] > t0 else "before the window"
                warnings.append(f"{d}: lost {when} ({lost[d][1]}); left out of this window")
            else:
                why = self._last_error.get(d, "no reading")
                warnings.append(f"{d}: not read at the window's edge ({why}); left out")
        crosscheck = {
            d: snap1[d] - snap0[d] for d in snap1 if d not in self.domain_methods and d in snap0
        }
        methods = {d: self.domain_methods[d] for d in energy}
        distrusted = self._distrusted(energy, methods, t0, t1, warnings)
        if duration_s >= 1.0:  # shorter windows are no evidence of a frozen counter
            warnings += self._frozen(energy, duration_s, periods)
        if len(energy) == len(self.domain_methods) and not distrusted:
            total_d = self._total_domains  # every domain read and trusted: the usual total
        else:
            total_d = total_domains(methods, self._contains_gpus, distrusted)
        classes = {domain_class(d) for d in total_d}
        if "gpu" in classes and "cpu" not in classes:
            warnings.append("cpu: nothing reads the CPU beside the GPU; the total leaves it out")
        for d in total_d:
            if duration_s < MIN_UPDATE_PERIODS * periods.get(d, 0.0):
                warnings.append(
                    f"{d}: window of {duration_s:.3g} s is shorter than {MIN_UPDATE_PERIODS} "
                    f"update periods ({periods[d] * 1000:.0f} ms); the figure is coarse"
                )
        total = sum(energy[d] for d in total_d)
        m = Measurement(
            name=name,
            duration_s=duration_s,
            energy_j=energy,
            total_j=total,
            method=combined_method(methods, total_d),
            sources=sorted({self.domain_sources[d] for d in total_d}),
            total_domains=list(total_d),
            domain_methods=methods,
            domain_sources={d: self.domain_sources[d] for d in energy},
            crosscheck_j=crosscheck,
            peak_power_w=self._peak_power(t0, t1, total_d),
            start_s=t0,
            end_s=t1,
            start_unix=self._unix_start + t0,
        )
        if self._cvp_power:
            m.counter_vs_power = self._counter_vs_power(t0, t1, energy, periods)
            if not self._open and self._cvp_ticks >= PRUNE_AT:
                self._prune_check_power(t1)  # nor the samples before this window's end
        self._thermal_into(m, w._thermal0, thermal1, warnings)
        m.warnings = _dedupe(warnings)
        w.measurement = m
        return m

    def _prune_check_power(self, t: float) -> None:
        with self._lock:
            if self._open:
                return
            self._cvp_ticks = 0
            for samples in [*self._cvp_changes.values(), *self._cvp_power.values()]:
                # keep the last one before ``t``: it bounds when the next change happened
                del samples[: max(bisect.bisect_left(samples, t, key=_first) - 1, 0)]

    def _distrusted(
        self, energy: dict, methods: dict, t0: float, t1: float, warnings: list[str]
    ) -> set[str]:
        """Whole-device domains that read 0, or froze, while the components drew power."""
        out: set[str] = set()
        if "system" not in energy and "board" not in energy:
            return out
        parts = [
            d
            for d in energy
            if methods[d] == MEASURED and domain_class(d) in ("cpu", "memory", "gpu")
        ]
        parts_j = sum(energy[d] for d in parts)
        duration_s = t1 - t0
        if parts_j <= 0 or duration_s <= 0:
            return out
        for whole in ("board", "system"):
            if whole not in energy or methods[whole] != MEASURED:
                continue
            parts_w = parts_j / duration_s
            if energy[whole] <= 0:
                out.add(whole)
                warnings.append(
                    f"{whole}: reads 0 while {', '.join(sorted(parts))} drew {parts_w:.1f} W; "
                    "distrusted, the total is the components'"
                )
            elif self._froze(whole, t0, t1, parts):
                out.add(whole)
                warnings.append(
                    f"{whole}: its reading froze while {', '.join(sorted(parts))} changed; "
                    "distrusted, the total is the components'"
                )
        return out

    def _froze(self, whole: str, t0: float, t1: float, parts: list[str]) -> bool:
        """A sampled whole-device power that stayed bit-identical for a window of at least
        ``MIN_UPDATE_PERIODS`` of its updates while the parts' traced power moved by > 20 %."""
        integral = self._integrals.get(whole)
        if integral is None or integral.changed_t > t0:
            return False
        if t1 - t0 < MIN_UPDATE_PERIODS * self.update_periods_s.get(whole, 1.0):
            return False
        with self._lock:
            lo = bisect.bisect_right(self._trace_t, t0)
            rows = self._trace_w[lo : bisect.bisect_right(self._trace_t, t1, lo)]
        sums = [sum(r.get(d, 0.0) for d in parts) for r in rows if all(d in r for d in parts)]
        if len(sums) < 5 or statistics.fmean(sums) <= 0:
            return False
        return (max(sums) - min(sums)) / statistics.fmean(sums) > 0.2

    def _frozen(self, energy: dict, duration_s: float, periods: dict) -> list[str]:
        """Counters that did not move at all while another domain of their source did."""
        out = []
        moved_by_source: dict[str, list[str]] = {}
        for d, j in energy.items():
            if j > 0:
                moved_by_source.setdefault(self.domain_sources[d], []).append(d)
        for d, j in energy.items():
            if j != 0 or domain_class(d) in ("board", "system"):
                continue
            moved = moved_by_source.get(self.domain_sources[d])
            if not moved or self.domain_methods[d] != MEASURED:
                continue
            if duration_s >= max(FROZEN_UPDATE_PERIODS * periods.get(d, 0.0), 1.0):
                out.append(
                    f"{d}: counter did not move in {duration_s:.3g} s while {moved[0]} did "
                    "(frozen?)"
                )
        return out

    def _thermal_into(self, m: Measurement, start: dict, end: dict, warnings: list[str]) -> None:
        if not start and not end:
            return
        m.thermal = {
            dev: {"start": start.get(dev, {}), "end": end.get(dev, {})}
            for dev in sorted(set(start) | set(end))
        }
        t_start = [v["temp_c"] for v in start.values() if "temp_c" in v]
        t_end = [v["temp_c"] for v in end.values() if "temp_c" in v]
        m.temp_start_c = max(t_start) if t_start else None
        m.temp_end_c = max(t_end) if t_end else None
        gpu_clocks = [v["clock_mhz"] for d, v in end.items() if "clock_mhz" in v and "gpu" in d]
        clocks = gpu_clocks or [v["clock_mhz"] for v in end.values() if "clock_mhz" in v]
        m.clock_mhz = statistics.fmean(clocks) if clocks else None
        limits = [v["power_limit_w"] for v in end.values() if "power_limit_w" in v]
        m.power_limit_w = sum(limits) if limits else None
        caps = [v["cpu_max_mhz"] for v in end.values() if "cpu_max_mhz" in v]
        m.cpu_max_mhz = max(caps) if caps else None
        if self.max_temp_drift_c is None:
            return
        for dev, edges in m.thermal.items():
            a, b = edges["start"].get("temp_c"), edges["end"].get("temp_c")
            if a is not None and b is not None and abs(b - a) > self.max_temp_drift_c:
                warnings.append(
                    f"{dev}: thermal drift of {b - a:+.1f} °C in the window "
                    f"(max_temp_drift_c {self.max_temp_drift_c:g})"
                )

    @contextmanager
    def window(self, name: str) -> Iterator[Window]:
        w = self.begin(name)
        try:
            yield w
        finally:
            self.end(name)

    def _peak_power(self, t0: float, t1: float, domains: list[str]) -> float | None:
        with self._lock:  # ticks are appended in time order: bisect, not a scan of the trace
            lo = bisect.bisect_right(self._trace_t, t0)
            rows = self._trace_w[lo : bisect.bisect_right(self._trace_t, t1, lo)]
        rows = [r for r in rows if all(d in r for d in domains)]
        if not rows or not domains:
            return None
        return max(sum(r[d] for d in domains) for r in rows)

    # ------------------------------------------------------------------ other
    def idle(self, seconds: float) -> dict[str, float]:
        """Watts per domain (and ``total``) while this process sleeps for ``seconds``."""
        name = f"idle-{id(self)}-{time.perf_counter_ns()}"
        self.begin(name)
        time.sleep(seconds)
        m = self.end(name)
        watts = {d: j / m.duration_s for d, j in m.energy_j.items()}
        watts["total"] = m.total_j / m.duration_s
        return watts

    def trace(self, start_s: float | None = None, end_s: float | None = None) -> list[dict]:
        """Sampled power rows ``{t_s, domain, watts}`` between two meter times (all by default)."""
        with self._lock:
            ticks = list(zip(self._trace_t, self._trace_w, strict=True))
        rows = []
        for t, watts in ticks:
            if (start_s is None or t >= start_s) and (end_s is None or t <= end_s):
                rows += [{"t_s": t, "domain": d, "watts": w} for d, w in watts.items()]
        return rows

    @property
    def domains(self) -> list[str]:
        return sorted(self.domain_methods)

    @property
    def min_window_s(self) -> float:
        """Shortest window worth measuring: 10 update periods of the slowest domain in use."""
        periods = [self.update_periods_s[d] for d in self.domain_methods]
        if self._power_sources and self.sample_hz:
            periods.append(1.0 / self.sample_hz)
        return MIN_UPDATE_PERIODS * max(periods, default=0.0)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        sources = [s for s, _ in self._counter_sources + self._power_sources]
        for source in dict.fromkeys(sources + self._crosscheck_sources):
            source.close()
        for thermal in self._thermal_sources:
            if not isinstance(thermal, Source):  # the CPU's own; sources close themselves above
                thermal.close()

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self._stop.set()
        except Exception:
            pass
