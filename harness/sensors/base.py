"""The one interface every energy source implements.

A source reads one or more *domains* (``cpu:0``, ``dram``, ``gpu:1``, ``board``, ``system``,
``ram``...). Each domain is of one kind:

* ``counter``  - a cumulative energy counter; the source returns monotonic joules (it unwraps
  hardware wraparound itself, see ``poll_interval_s``, and tells a reset from a wrap).
* ``power``    - instantaneous or averaged watts; the meter samples and integrates them.
* ``estimate`` - a model, returned as a monotonic joule counter but labelled estimated.
* ``codecarbon`` - codecarbon's own tracker, a cross-check never added to totals.

Sources never raise out of ``probe``. Reads do not raise either for one failing domain: the
domain is left out of the returned dict and ``read_errors`` says why, so the meter can drop that
domain alone and keep the rest. What a source notices while reading (a counter reset, a range it
no longer trusts) goes into ``events`` as short texts naming the domain; the meter collects them
into the warnings of the windows open at the time.
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
CROSSCHECK = "crosscheck"


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
    #: ``measured``, ``estimated`` or ``crosscheck``. Labelling fails closed: a source that does
    #: not say ``measured`` explicitly has its figures labelled estimated.
    method: str | None = None
    #: seconds between two updates of the underlying sensor (RAPL ~1 ms, NVML counter ~100 ms).
    update_period_s: float = 0.001
    #: whole-device domains of this source that include the GPUs (an ACPI meter at the wall)
    contains_gpus: frozenset[str] = frozenset()
    #: the rows of a probe just made by ``resolve``, which the meter takes instead of probing
    #: the machine a second time while it starts
    probed: list[DomainStatus] | None = None

    def probe(self) -> list[DomainStatus]:
        """Every domain this source knows of on this machine, usable or not, with why not."""
        raise NotImplementedError

    def installed(self) -> bool:
        """Whether what this source reads through can be on this machine at all; a source that
        says no (a vendor library that only comes with its driver stack) is left out of
        ``harness sensors --check`` rather than listed as one more line of nothing."""
        return True

    def open(self) -> None:
        """Acquire handles for the domains that probed ``ok``; again after ``close`` too."""

    def counter_domains(self) -> list[str]:
        """Domains read with ``read_energy_j`` (kinds counter and estimate)."""
        return []

    def power_domains(self) -> list[str]:
        """Domains read with ``read_power_w`` (kind power)."""
        return []

    def domain_update_period_s(self, domain: str) -> float:
        """How often ``domain`` changes; the source-wide period unless a source knows better.
        Cheap: what the source assumes until ``learn_update_periods`` has run."""
        return self.update_period_s

    def learn_update_periods(self) -> dict[str, float]:
        """Per domain, the period the hardware states where finding it out is slow (files whose
        read runs firmware code). The meter calls it in the background once started, so that
        starting costs nothing of it, and its windows' ends wait for it."""
        return {}

    def read_energy_j(self) -> dict[str, float]:
        """Monotonic cumulative joules per counter domain; a failed domain is left out."""
        return {}

    def read_power_w(self) -> dict[str, float]:
        """Present watts per power domain; a failed domain is left out."""
        return {}

    def thermal(self) -> dict[str, dict[str, float]]:
        """Per device, what it reports of ``temp_c``, ``clock_mhz``, ``power_limit_w``."""
        return {}

    def window_notes(self) -> list[str]:
        """Warnings that hold for every window while they last (a die counted once)."""
        return []

    def poll_interval_s(self) -> float | None:
        """How often the meter must call ``read_energy_j`` so no wrap is missed (None: never)."""
        return None

    def drop(self, domain: str) -> None:
        """Stop reading ``domain`` (it kept failing); the others go on."""

    def close(self) -> None:
        """Release handles. Idempotent."""

    # filled while reading; the meter empties them
    @property
    def events(self) -> list[str]:
        """Texts naming a domain, of what the source noticed while reading (resets...)."""
        return self.__dict__.setdefault("_events", [])

    @property
    def read_errors(self) -> dict[str, str]:
        """Why each domain missing from the last read failed."""
        return self.__dict__.setdefault("_read_errors", {})

    @property
    def gone(self) -> set[str]:
        """Domains whose last failure cannot heal (a vanished file, a GPU off the bus)."""
        return self.__dict__.setdefault("_gone", set())

    def fail(self, domain: str, message: str, permanent: bool = False) -> None:
        """Record that ``domain`` could not be read this time, and why."""
        self.read_errors[domain] = message
        if permanent:
            self.gone.add(domain)


class CounterUnwrapper:
    """Turns a raw counter that wraps at ``max_range`` into a monotonic one, telling resets apart.

    A step back is a wrap only when the forward distance (``raw + max_range - last``) fits what
    the zone can draw in the time since the last read (``max_power`` units per second, with a
    margin for the counter's own update granularity). Otherwise the counter was reset (suspend
    and resume, a driver reload): the units counted since the reset are kept when they fit the
    same bound, else nothing, and ``events`` gets a line naming the domain. The meter polls often
    enough (``poll_interval_s``) that at most one wrap falls between two reads; a range of 0, or
    one below a value the counter holds, is not trusted, and every step back is then a reset.
    """

    __slots__ = ("domain", "max_range", "max_power", "_last_raw", "_last_t", "_total", "_events")

    #: slack in seconds added to the elapsed time: update granularity and scheduling jitter
    SLACK_S = 0.05

    def __init__(
        self,
        max_range: int | None,
        first_raw: int,
        *,
        domain: str = "?",
        max_power: float | None = None,
        now_s: float = 0.0,
        events: list[str] | None = None,
    ):
        self.domain = domain
        self.max_range = max_range if max_range and max_range > first_raw else None
        self.max_power = max_power
        self._last_raw = first_raw
        self._last_t = now_s
        self._total = 0
        self._events = events if events is not None else []

    def _fits(self, units: int, elapsed_s: float) -> bool:
        if self.max_power is None:
            return True  # no bound known: a step back that fits the range is a wrap
        return units <= self.max_power * (max(elapsed_s, 0.0) + self.SLACK_S)

    def update(self, raw: int, now_s: float = 0.0) -> int:
        delta = raw - self._last_raw
        if delta < 0:
            elapsed = now_s - self._last_t
            if self.max_range is not None and self._fits(delta + self.max_range, elapsed):
                delta += self.max_range
            else:
                delta = raw if self._fits(raw, elapsed) else 0
                self._events.append(
                    f"{self.domain}: counter reset inside the window; energy after it only"
                )
        elif self.max_range is not None and raw >= self.max_range:
            self.max_range = None
            self._events.append(
                f"{self.domain}: counter holds {raw}, past its stated range; "
                "its wraps can no longer be told from resets"
            )
        self._last_raw = raw
        self._last_t = now_s
        self._total += delta
        return self._total
