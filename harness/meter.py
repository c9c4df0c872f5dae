"""Windows of energy over the sensors of one machine.

Counters (RAPL, NVML total energy, hwmon energy, estimates) are read at window edges, so a window
costs a few file reads. Power-only domains are sampled by one background thread and integrated
with the trapezoid rule; at a window edge the meter takes one extra reading so the integral ends
exactly there. The same thread polls wrapping counters often enough never to miss a wrap, and keeps
a power trace (t_s, domain, watts) of every domain when ``sample_hz`` is set.
"""

from __future__ import annotations

import bisect
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from harness.errors import HarnessError, SensorError
from harness.sensors import ESTIMATED, MEASURED, OK, Source, resolve
from harness.sensors.domains import combined_method, total_domains


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
        }


class Window:
    """An open (then closed) window; ``measurement`` is set when it ends."""

    __slots__ = ("name", "_t0", "_snap0", "measurement")

    def __init__(self, name: str, t0: float, snap0: dict[str, float]):
        self.name = name
        self._t0 = t0
        self._snap0 = snap0
        self.measurement: Measurement | None = None


class _PowerIntegral:
    __slots__ = ("t", "w", "joules")

    def __init__(self, t: float, w: float):
        self.t, self.w, self.joules = t, w, 0.0

    def add(self, t: float, w: float) -> float:
        if t > self.t:
            self.joules += 0.5 * (w + self.w) * (t - self.t)
            self.t, self.w = t, w
        return self.joules


class Meter:
    """Energy windows over a set of sources (see ARCHITECTURE.md, Python interface).

    ``sensors``: ``"auto"``, a list of source names, or a list of ``Source`` objects.
    ``sample_hz``: rate of the background sampler (power domains and traces); ``None`` reads
    counters only and leaves power-only domains out.
    """

    def __init__(
        self,
        sensors: str | list = "auto",
        sample_hz: float | None = 10,
        *,
        tdp_w: float | None = None,
        sync_gpu: bool = True,
        keep_trace: bool = True,
    ):
        if sample_hz is not None and sample_hz <= 0:
            raise HarnessError(f"sample_hz must be positive or None, not {sample_hz}")
        if isinstance(sensors, list) and sensors and all(isinstance(s, Source) for s in sensors):
            sources = list(sensors)
        else:
            sources = resolve(sensors, tdp_w=tdp_w)
        self.sample_hz = sample_hz
        self.sync_gpu = sync_gpu
        self.keep_trace = keep_trace
        self._lock = threading.RLock()
        self._open: dict[str, Window] = {}
        self._t_start = time.perf_counter()
        self._unix_start = time.time()
        self.statuses = []
        #: why the background sampler stopped early, if it did
        self.sampler_error: str | None = None
        self._counter_sources: list[Source] = []
        self._power_sources: list[Source] = []
        self._crosscheck_sources: list[Source] = []
        self.domain_methods: dict[str, str] = {}
        self.domain_sources: dict[str, str] = {}
        for source in sources:
            rows = source.probe()
            self.statuses += rows
            if not any(r.status == OK for r in rows):
                source.close()
                continue
            source.open()
            if source.method == "crosscheck":
                self._crosscheck_sources.append(source)
                continue
            method = ESTIMATED if source.method == ESTIMATED else MEASURED
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
            if counters:
                self._counter_sources.append(source)
            if powers:
                self._power_sources.append(source)
        self._total_domains = total_domains(self.domain_methods)
        self.method = combined_method(self.domain_methods, self._total_domains)
        self._integrals: dict[str, _PowerIntegral] = {}
        now = self._now()
        for source in self._power_sources:
            for d, w in source.read_power_w().items():
                self._integrals[d] = _PowerIntegral(now, w)
        # trace: ticks of (t_s, {domain: watts})
        self._trace_t: list[float] = []
        self._trace_w: list[dict[str, float]] = []
        self._last_tick: tuple[float, dict[str, float]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        period = self._sampler_period()
        if period is not None:
            self._last_tick = (now, self._read_counters())
            self._thread = threading.Thread(
                target=self._sample_loop, args=(period,), name="harness-meter", daemon=True
            )
            self._thread.start()

    # ------------------------------------------------------------------ reading
    def _now(self) -> float:
        return time.perf_counter() - self._t_start

    def _sampler_period(self) -> float | None:
        periods = [1.0 / self.sample_hz] if self.sample_hz else []
        periods += [p for s in self._counter_sources if (p := s.poll_interval_s())]
        return min(periods) if periods else None

    def _read_counters(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for source in self._counter_sources:
            out.update(source.read_energy_j())
        return out

    def _snapshot(self, edge: bool = False) -> tuple[float, dict[str, float]]:
        """Cumulative joules of every domain now. Holds the lock: sources are not thread-safe.

        At a window edge (``edge``) cross-check sources are read too, under their source name.
        """
        with self._lock:
            t = self._now()
            snap = self._read_counters()
            for source in self._power_sources:
                for d, w in source.read_power_w().items():
                    snap[d] = self._integrals[d].add(t, w)
            if edge:
                for source in self._crosscheck_sources:
                    snap[source.name] = sum(source.read_energy_j().values())
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
            except SensorError as e:  # a sensor that died mid-run: stop sampling, keep windows
                self.sampler_error = str(e)
                break

    def _tick(self) -> None:
        t, snap = self._snapshot()
        if not self.keep_trace or self._last_tick is None:
            return
        t0, prev = self._last_tick
        dt = t - t0
        if dt <= 0:
            return
        watts = {d: (snap[d] - prev.get(d, snap[d])) / dt for d in snap}
        with self._lock:
            self._trace_t.append(t)
            self._trace_w.append(watts)
            self._last_tick = (t, snap)

    def _sync_gpu(self) -> None:
        torch = sys.modules.get("torch")
        if torch is None or not self.sync_gpu:
            return
        cuda = getattr(torch, "cuda", None)
        if cuda is not None and cuda.is_initialized():
            for i in range(cuda.device_count()):
                cuda.synchronize(i)

    # ------------------------------------------------------------------ windows
    def begin(self, name: str) -> Window:
        """Open a window; names are unique among open windows."""
        self._sync_gpu()
        t, snap = self._snapshot(edge=True)
        with self._lock:
            if name in self._open:
                raise HarnessError(f"a window named {name!r} is already open")
            w = Window(name, t, snap)
            self._open[name] = w
        return w

    def end(self, name: str) -> Measurement:
        """Close the window ``name`` and return its measurement."""
        self._sync_gpu()
        t1, snap1 = self._snapshot(edge=True)
        with self._lock:
            w = self._open.pop(name, None)
        if w is None:
            raise HarnessError(f"no open window named {name!r}")
        delta = {d: snap1[d] - w._snap0.get(d, snap1[d]) for d in snap1}
        energy = {d: j for d, j in delta.items() if d in self.domain_methods}
        crosscheck = {d: j for d, j in delta.items() if d not in self.domain_methods}
        total = sum(energy[d] for d in self._total_domains)
        sources = sorted({self.domain_sources[d] for d in self._total_domains})
        w.measurement = Measurement(
            name=name,
            duration_s=t1 - w._t0,
            energy_j=energy,
            total_j=total,
            method=self.method,
            sources=sources,
            total_domains=list(self._total_domains),
            domain_methods=dict(self.domain_methods),
            domain_sources=dict(self.domain_sources),
            crosscheck_j=crosscheck,
            peak_power_w=self._peak_power(w._t0, t1),
            start_s=w._t0,
            end_s=t1,
            start_unix=self._unix_start + w._t0,
        )
        return w.measurement

    @contextmanager
    def window(self, name: str) -> Iterator[Window]:
        w = self.begin(name)
        try:
            yield w
        finally:
            self.end(name)

    def _peak_power(self, t0: float, t1: float) -> float | None:
        with self._lock:  # ticks are appended in time order: bisect, not a scan of the trace
            lo = bisect.bisect_right(self._trace_t, t0)
            rows = self._trace_w[lo : bisect.bisect_right(self._trace_t, t1, lo)]
        if not rows:
            return None
        return max(sum(r.get(d, 0.0) for d in self._total_domains) for r in rows)

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
        """Shortest window worth measuring: 10 update periods of the slowest sensor in use."""
        periods = [s.update_period_s for s in self._counter_sources + self._power_sources]
        if self._power_sources and self.sample_hz:
            periods.append(1.0 / self.sample_hz)
        return 10 * max(periods, default=0.0)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for source in self._counter_sources + self._power_sources + self._crosscheck_sources:
            source.close()

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self._stop.set()
        except Exception:
            pass
