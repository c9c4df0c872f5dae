"""The stopping rule: a constant sensor never makes a case converge early."""

from __future__ import annotations

from harness.stopping import CONVERGED, MAX_REPEATS, stop_reason


def _rule(energies, **kw):
    settings = {"min_repeats": 5, "max_repeats": 8, "min_duration_s": 0, "target_rel_ci": 0.05}
    settings.update(kw)
    return stop_reason(energies, [1.0] * len(energies), **settings)


def test_a_constant_reading_waits_for_min_repeats():
    assert [_rule([7.0] * n) for n in range(1, 5)] == [None] * 4
    assert _rule([7.0] * 5) == CONVERGED


def test_a_sensor_that_reads_nothing_never_converges():
    assert [_rule([0.0] * n) for n in range(1, 8)] == [None] * 7
    assert _rule([0.0] * 8) == MAX_REPEATS
