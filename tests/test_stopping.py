"""The stopping rule: a constant sensor never makes a case converge early."""

from __future__ import annotations

from harness.settings import MeasurementSettings, case_settings
from harness.stopping import CONVERGED, MAX_REPEATS, PLANNED, TIME_BUDGET, repeat, stop_reason


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


# ------------------------------------------------------------------ the loop beside the rule


class FakeClock:
    def __init__(self, step_s: float) -> None:
        self.now, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        return self.now


def run_with(energies, settings, planned=None, rep_s=1.0):
    clock = FakeClock(rep_s)
    slept: list[float] = []

    def run_one(i):
        clock.now += rep_s
        return {"energy_j": energies[i % len(energies)], "duration_s": rep_s}

    records: list[dict] = []
    reason = repeat(run_one, records, settings, planned=planned, started=0.0, clock=clock,
                    sleep=slept.append)  # fmt: skip
    return reason, records, slept


def test_repeat_stops_where_the_rule_says_with_the_suites_defaults():
    # the worker once read min_repeats as 3 in one place and 1 in another, and min_duration_s
    # as 0 where the suite says 1: a case without the keys now gets the suite's values
    settings = case_settings({"measurement": {}})
    assert (settings.min_repeats, settings.min_duration_s) == (3, 1)
    reason, records, _ = run_with([10.0], settings, rep_s=0.2)
    # constant: converges at min_repeats (3) only once a second is measured (5 x 0.2 s)
    assert reason == CONVERGED and len(records) == 5
    reason, records, _ = run_with([1.0, 9.0], MeasurementSettings(max_repeats=4))
    assert reason == MAX_REPEATS and len(records) == 4


def test_repeat_runs_the_planned_count_and_cools_down_between_repetitions():
    reason, records, slept = run_with([1.0, 9.0], MeasurementSettings(cooldown_s=2), planned=6)
    assert reason == PLANNED and len(records) == 6 and slept == [2.0] * 5


def test_repeat_stops_before_a_repetition_would_pass_the_timeout():
    # 30 s a repetition, 100 s allowed: the fourth would end at 120 s > 85 % of the timeout
    settings = MeasurementSettings(case_timeout_s=100, max_repeats=10)
    reason, records, _ = run_with([1.0, 9.0], settings, rep_s=30.0)
    assert reason == TIME_BUDGET and len(records) == 3
    # never before min_repeats, even when that passes the budget
    settings = MeasurementSettings(case_timeout_s=50, min_repeats=3, max_repeats=10)
    reason, records, _ = run_with([1.0, 9.0], settings, rep_s=30.0)
    assert reason == TIME_BUDGET and len(records) == 3
