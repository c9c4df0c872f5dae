"""``--metrics-port PORT`` on ``harness run`` and ``harness measure``: live Prometheus metrics.

A ``MetricsServer`` serves, on 127.0.0.1 only, from its own registry:

- ``harness_power_watts{domain,source,method}``: each domain's average power over the last second;
- ``harness_energy_joules_total{domain,source,method}``: each domain's energy since the server
  started (a counter, so ``rate()`` gives power back);
- ``harness_cases_done_total`` and ``harness_cases_failed_total``: cases finished by the run.

The figures come from a ``Meter`` of its own in the process that serves them, read by a one-second
window after another (the public window interface, no private reads): counters are read at the
window edges, so this costs a few file reads a second. ``method`` says, as everywhere, whether a
domain is measured or estimated. prometheus_client is imported only here (extra ``prometheus``).
"""

from __future__ import annotations

import threading

from harness.errors import HarnessError

INTERVAL_S = 1.0
HOST = "127.0.0.1"


class MetricsServer:
    """Serve live power, energy and case counts on ``127.0.0.1:port`` until ``close``."""

    def __init__(
        self,
        port: int,
        *,
        sensors: str | list = "auto",
        tdp_w: float | None = None,
        interval_s: float = INTERVAL_S,
        meter=None,
    ):
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
        except ImportError:
            raise HarnessError(
                "--metrics-port needs prometheus_client: pip install 'energy-harness[prometheus]'"
            ) from None
        if not isinstance(port, int) or not 0 < port < 65536:
            raise HarnessError(f"--metrics-port must be a port number (1-65535), not {port!r}")
        self.registry = CollectorRegistry()
        labels = ["domain", "source", "method"]
        self.power = Gauge(
            "harness_power_watts", "Average power over the last interval", labels,
            registry=self.registry,
        )  # fmt: skip
        self.energy = Counter(
            "harness_energy_joules", "Energy since the server started", labels,
            registry=self.registry,
        )  # fmt: skip
        self.done = Counter("harness_cases_done", "Cases finished", registry=self.registry)
        self.failed = Counter("harness_cases_failed", "Cases failed", registry=self.registry)
        try:
            self._server, self._thread = start_http_server(port, addr=HOST, registry=self.registry)
        except OSError as e:
            raise HarnessError(
                f"--metrics-port {port}: cannot listen on {HOST} ({e.strerror})"
            ) from None
        self.port = port
        self.interval_s = interval_s
        self._own_meter = meter is None
        if meter is None:
            from harness.meter import Meter

            meter = Meter(sensors=sensors, sample_hz=None, tdp_w=tdp_w)
        self.meter = meter
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="harness-metrics", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        n = 0
        name = f"metrics-{id(self)}-{n}"
        self.meter.begin(name)
        while not self._stop.wait(self.interval_s):
            try:
                m = self.meter.end(name)
                n += 1
                name = f"metrics-{id(self)}-{n}"
                self.meter.begin(name)
            except Exception:  # noqa: BLE001 - the metrics never end a run; next tick tries again
                continue
            self._publish(m)
        try:
            self.meter.end(name)
        except Exception:  # noqa: BLE001
            pass

    def _publish(self, m) -> None:
        for domain, joules in m.energy_j.items():
            labels = (
                domain,
                m.domain_sources.get(domain, "?"),
                m.domain_methods.get(domain, m.method),
            )
            if m.duration_s > 0:
                self.power.labels(*labels).set(joules / m.duration_s)
            if joules > 0:
                self.energy.labels(*labels).inc(joules)

    def case_finished(self, case: dict, result: dict) -> None:
        """The runner's note that a case finished (ok or failed)."""
        self.done.inc()
        if result.get("status") != "ok":
            self.failed.inc()

    def close(self) -> None:
        self._stop.set()
        self._poller.join(timeout=5)
        self._server.shutdown()
        self._server.server_close()
        if self._own_meter:
            self.meter.close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serving(port: int | None, **options):
    """A MetricsServer on ``port``, or a context that does nothing when ``port`` is None."""
    import contextlib

    return MetricsServer(port, **options) if port is not None else contextlib.nullcontext()
