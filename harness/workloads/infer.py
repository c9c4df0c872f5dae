"""Inference: greedy generation of a fixed number of tokens for a fixed batch of prompts.

Every call generates exactly ``new_tokens`` tokens for each of ``batch_size`` prompts of exactly
``prompt_tokens`` tokens (no padding, end-of-sequence suppressed), so the work of every call is
the same and the per-token figures divide known token counts. A *query* is one prompt's
completion; one ``generate`` call serves ``batch_size`` queries.

A repetition is two windows, back to back:

* ``prefill``: ``prefill_calls`` calls that generate one token each (the prompt's forward pass
  and the first token), scaled to ``calls`` calls for the ``prefill_s`` / ``prefill_j`` columns;
* the main window: ``calls`` full calls. This is the repetition's measurement (``duration_s``,
  ``energy_j``); ``decode_s`` / ``decode_j`` are this window less the scaled prefill.

Both call counts are fixed once, after warmup (from the fastest of a few timed calls), so that
each window lasts at least the meter's shortest useful window (10 sensor update periods) and at
least ``MIN_WINDOW_S``; every repetition then does the same work. Nothing runs inside a window
but the calls and a clock read around each one (and, on a GPU, a synchronise so that a call's
time is the time of its work).

Per repetition: ``queries`` = calls × batch_size, ``tokens_in`` / ``tokens_out`` = queries ×
prompt_tokens / new_tokens; ``ttft_s`` is the mean prefill call, ``tpot_s`` the mean full call
less ``ttft_s`` over the new_tokens - 1 later tokens, ``latency_p50/p90/p99_s`` percentiles of
the full calls (each call's latency is that of all its batch's queries). The per-token and
per-query energies are derived from these by ``harness.records.derive``.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from harness.errors import HarnessError
from harness.schema import CaseShape, ModelWorkloadSettings
from harness.workloads.base import Repetition, Workload
from harness.workloads.memory import PeakMemory

#: a window shorter than this is dominated by edge effects even on fast sensors
MIN_WINDOW_S = 0.2
#: the prompts' token ids are drawn with this seed, so every run measures the same prompts
PROMPT_SEED = 0


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation, as numpy's default."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class InferSettings(ModelWorkloadSettings):
    """The suite's infer block: a case per batch size."""

    extra: ClassVar = ("ml", ("torch", "transformers", "tokenizers"))

    type: Literal["infer"]
    batch_sizes: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    prompt_tokens: Annotated[int, Field(ge=1)]
    new_tokens: Annotated[int, Field(ge=1)]

    @field_validator("batch_sizes")
    @classmethod
    def _unique(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("a batch size is listed twice")
        return value

    def shapes(self) -> list[tuple[dict, str, str]]:
        p, n = self.prompt_tokens, self.new_tokens
        return [
            (
                {"type": self.type, "batch_size": b, "prompt_tokens": p, "new_tokens": n},
                f"infer-b{b}",
                f"infer-b{b}-p{p}-n{n}",
            )
            for b in self.batch_sizes
        ]


class InferCase(CaseShape):
    """One infer case's workload dict (``InferSettings.shapes``)."""

    type: Literal["infer"]
    batch_size: Annotated[int, Field(gt=0)]
    prompt_tokens: Annotated[int, Field(gt=0)]
    new_tokens: Annotated[int, Field(gt=0)]


class InferWorkload(Workload):
    """``{type: infer, batch_size, prompt_tokens, new_tokens}``: see the module's docstring."""

    type = "infer"
    settings = InferSettings
    case = InferCase
    shape: InferCase
    engines = "in-process"
    uses_model = True
    unit = "query"
    shape_key = "batch_size"
    shape_word = "batch"
    compare_metrics = (
        "energy_per_query_j",
        "energy_per_token_j",
        "tokens_per_s",
        "ttft_s",
        "tpot_s",
    )
    stage = "inference"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.engine = None
        #: full generate calls per repetition, and prefill-only calls (set after warmup)
        self.calls: int | None = None
        self.prefill_calls: int | None = None

    # ---------------------------------------------------------------- setup
    def setup(self) -> dict:
        from harness.engines import create_engine, engine_name
        from harness.hardware import apply_profile, describe

        case = self.ctx.case
        apply_profile(case["hardware"])
        self.engine = create_engine(engine_name(case.get("variant")))
        self.engine.making_window = self.ctx.meter.window  # a variant's making is measured
        static = self.engine.load(
            case["model"], case.get("variant"), case["hardware"], self.ctx.artifacts_dir
        )
        limit = self.engine.context_length()
        total = self.shape.prompt_tokens + self.shape.new_tokens
        if limit is not None and total > limit:
            raise HarnessError(
                f"infer workload: prompt_tokens + new_tokens = {total} exceeds the context length "
                f"of model {static.get('model')!r} ({limit})"
            )
        self.prompts = self.engine.prompts(
            self.shape.batch_size, self.shape.prompt_tokens, PROMPT_SEED
        )
        self.input_ids, self.attention_mask = self.prompts.input_ids, self.prompts.attention_mask
        self._memory = PeakMemory(self.engine.device)
        return {
            **static,
            "device_name": describe(case["hardware"])["device_name"],
            "batch_size": self.shape.batch_size,
            "prompt_tokens": self.shape.prompt_tokens,
            "new_tokens": self.shape.new_tokens,
        }

    @property
    def loaded(self):
        """What the engine loaded (for the transformers engine: model, tokenizer, device)."""
        return self.engine.loaded if self.engine is not None else None

    # ---------------------------------------------------------------- calls
    def generate(self, new_tokens: int):
        """One greedy call producing exactly ``new_tokens`` tokens per prompt; returns the ids."""
        return self.engine.generate(self.prompts, new_tokens)

    def _timed_calls(self, count: int, new_tokens: int) -> list[float]:
        """Seconds of each of ``count`` calls (a GPU is synchronised so each time is complete)."""
        clock, sync, generate = time.perf_counter, self.engine.synchronize, self.generate
        times = []
        for _ in range(count):
            t0 = clock()
            generate(new_tokens)
            sync()
            times.append(clock() - t0)
        return times

    def warmup(self, iterations: int) -> None:
        """Unmeasured calls, then a few timed calls of each kind that fix the call counts."""
        for _ in range(iterations):
            self.generate(self.shape.new_tokens)
            self.generate(1)
        self._calibrate()

    def _calibrate(self) -> None:
        target_s = max(self.ctx.meter.min_window_s, MIN_WINDOW_S)
        self.calls = self._calls_to_fill(target_s, self.shape.new_tokens)
        self.prefill_calls = self._calls_to_fill(target_s, 1)

    def _calls_to_fill(self, target_s: float, new_tokens: int) -> int:
        """Calls that fill ``target_s``, from the fastest of up to 3 timed calls.

        The fastest, because other load only slows calls down: a window sized on a slow call
        would fall short of the target once the load is gone. One call that fills the target
        alone settles it.
        """
        fastest_s = math.inf
        for _ in range(3):
            (call_s,) = self._timed_calls(1, new_tokens)
            fastest_s = min(fastest_s, call_s)
            if call_s >= target_s:
                break
        return max(1, math.ceil(target_s / max(fastest_s, 1e-9)))

    # ---------------------------------------------------------------- measure
    def run(self, repetition: int) -> Repetition:
        if self.calls is None:
            self._calibrate()
        meter = self.ctx.meter
        calls, prefill_calls = self.calls, self.prefill_calls
        self._memory.reset()

        meter.begin(f"infer-prefill-{repetition}")
        prefill_times = self._timed_calls(prefill_calls, 1)
        m_prefill = meter.end(f"infer-prefill-{repetition}")

        meter.begin(f"infer-{repetition}")
        call_times = self._timed_calls(calls, self.shape.new_tokens)
        m = meter.end(f"infer-{repetition}")

        memory = self._memory.read()
        b, p, n = self.shape.batch_size, self.shape.prompt_tokens, self.shape.new_tokens
        ttft_s = statistics.fmean(prefill_times)
        mean_call_s = statistics.fmean(call_times)
        # the prefill window ran prefill_calls calls; scale it to the main window's calls
        scale = calls / prefill_calls
        prefill_s = m_prefill.duration_s * scale
        prefill_j = m_prefill.total_j * scale
        columns: dict[str, Any] = {
            "batch_size": b,
            "prompt_tokens": p,
            "new_tokens": n,
            "queries": calls * b,
            "tokens_in": calls * b * p,
            "tokens_out": calls * b * n,
            "calls": calls,
            "prefill_calls": prefill_calls,
            "ttft_s": ttft_s,
            "tpot_s": (mean_call_s - ttft_s) / (n - 1) if n > 1 else None,
            "latency_p50_s": _percentile(call_times, 50),
            "latency_p90_s": _percentile(call_times, 90),
            "latency_p99_s": _percentile(call_times, 99),
            "prefill_s": prefill_s,
            "prefill_j": prefill_j,
            "decode_s": m.duration_s - prefill_s,
            "decode_j": m.total_j - prefill_j,
            **memory,
        }
        # the prefill window is not passed as a part: its raw figures cover prefill_calls calls,
        # and a second, unscaled prefill column beside prefill_s / prefill_j would mislead
        return Repetition(measurement=m, columns=columns)

    def summary(self) -> dict:
        return {
            "calls_per_repetition": self.calls,
            "prefill_calls_per_repetition": self.prefill_calls,
            "prompt_seed": PROMPT_SEED,
        }

    def teardown(self) -> None:
        if self.engine is not None:
            self.engine.close()
