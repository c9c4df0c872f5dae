"""The one interface every energy source implements.

A source reads one or more *domains* (``cpu:0``, ``dram``, ``gpu:1``, ``board``, ``system``,
``ram``...). Each domain is of one kind:

* ``counter``  - a cumulative energy counter; the source returns monotonic joules (it unwraps
  hardware wraparound itself, see ``poll_interval_s``).
* ``power``    - instantaneous or averaged watts; the meter samples and integrates them.
* ``estimate`` - a model, returned as a monotonic joule counter but labelled estimated.
* ``codecarbon`` - codecarbon's own tracker, a cross-check never added to totals.

Sources never raise out of ``probe``: an absent or unreadable sensor is a ``DomainStatus`` with
status ``unavailable`` or ``no-permission`` and a reason that says what to do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

OK = "ok"
NO_PERMISSION = "no-permission"
UNAVAILABLE = "unavailable"

COUNTER = "counter"
POWER = "power"
ESTIMATE = "estimate"
CODECARBON = "codecarbon"

MEASURED = "measured"
ESTIMATED = "estimated"


@dataclass(frozen=True)
class DomainStatus:
    """One row of ``harness sensors``."""

    source: str
    domain: str
    kind: str
    status: str
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class Source:
    """Base class of an energy source. Subclasses set ``name`` and override what they offer."""

    name: str = "?"
    #: ``measured`` or ``estimated``: how every figure of this source was obtained.
    method: str = MEASURED
    #: seconds between two updates of the underlying sensor (RAPL ~1 ms, NVML counter ~20-100 ms).
    update_period_s: float = 0.001

    def probe(self) -> list[DomainStatus]:
        """Every domain this source knows of on this machine, usable or not, with why not."""
        raise NotImplementedError

    def open(self) -> None:
        """Acquire handles for the domains that probed ``ok``. Called once by the meter."""

    def counter_domains(self) -> list[str]:
        """Domains read with ``read_energy_j`` (kinds counter and estimate)."""
        return []

    def power_domains(self) -> list[str]:
        """Domains read with ``read_power_w`` (kind power)."""
        return []

    def read_energy_j(self) -> dict[str, float]:
        """Monotonic cumulative joules per counter domain, wraparound already undone."""
        return {}

    def read_power_w(self) -> dict[str, float]:
        """Present watts per power domain."""
        return {}

    def poll_interval_s(self) -> float | None:
        """How often the meter must call ``read_energy_j`` so no wrap is missed (None: never)."""
        return None

    def close(self) -> None:
        """Release handles. Idempotent."""


class CounterUnwrapper:
    """Turns a raw counter that wraps at ``max_range`` into a monotonic one.

    A read that went backwards means at least one wrap; several wraps between two reads cannot be
    seen from the values alone, so the meter polls every ``poll_interval_s`` (a quarter of the
    shortest wrap period) and this class then only ever sees zero or one wrap between reads.
    """

    __slots__ = ("max_range", "_last_raw", "_total")

    def __init__(self, max_range: int | None, first_raw: int):
        self.max_range = max_range
        self._last_raw = first_raw
        self._total = 0

    def update(self, raw: int) -> int:
        delta = raw - self._last_raw
        if delta < 0:
            delta += self.max_range if self.max_range else 0
            if delta < 0:  # no range known or a counter reset: count nothing rather than garbage
                delta = 0
        self._last_raw = raw
        self._total += delta
        return self._total
