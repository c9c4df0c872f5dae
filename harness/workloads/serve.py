"""Serve: streamed requests to the variant's model server, measured in its steady state only.

``{type: serve, concurrency, requests, prompt_tokens, new_tokens, port, prefix_cache,
min_steady_s, max_failed_share, request_timeout_s}`` (and a case's ``rate_rps``): the case
exports the model for its engine (GGUF for llama.cpp, inside a meter window: ``produce_j``),
starts the server with ``concurrency`` slots in its own process group, and stops it at the end
(also on failure; the kernel kills it if the worker dies). Each repetition sends ``requests``
(default 4 x concurrency) streamed completions of exactly ``prompt_tokens`` token ids and
``new_tokens`` generated tokens (end-of-sequence ignored) from ``concurrency`` closed-loop clients
(``harness.engines.client``), or, in an open-loop case (``rate_rps``), at seeded Poisson arrivals
of that rate whatever is still in flight (the server queues what its slots cannot take).

No hidden cache: each repetition's prompts are its own (seeded by the repetition; the warmup has
others) and the engine switches its server's prompt/prefix cache off, unless ``prefix_cache``
(then every repetition re-sends the warmup's prompts). The server's own count of prompt tokens
it prefilled (its metrics, read before and after the load) is ``server_prompt_tokens`` beside
``sent_prompt_tokens``; a difference is a warning naming both.

The meter window is the steady state: closed-loop, it opens when ``concurrency`` requests are in
flight and each has its first token, and closes when fewer than ``concurrency`` remain;
open-loop, it opens at the arrival that ends the first tenth of arrivals and closes at the last
arrival (what follows is drain), and ``offered_rps`` is the arrivals it saw per second. A server
that serves fewer requests per second in the window than were offered gets a warning; so does a
window shorter than ``min_steady_s`` (default 1 s, never under 10 sensor update periods). Inside
it: ``tokens_out`` = tokens of successful requests that arrived in the window,
``energy_per_token_j`` = window energy / those tokens, ``energy_per_request_j`` = energy per
token × ``new_tokens``, ``requests_per_s`` = tokens per second / ``new_tokens``. TTFT, TPOT (per
request: (latency - TTFT)/(tokens - 1)), inter-token and end-to-end latency percentiles are over
the repetition's successful requests; every request is kept in ``requests.parquet``.

A failed request is counted (``requests_ok``, ``requests_failed``, ``first_error``); more than
``max_failed_share`` of them fails the case in one line. ``client_cpu_s`` is the load generator's
own CPU time in the window (this process); where CPU energy is in the figure its share of it,
by CPU time, is subtracted (``client_energy_j``, ``client_energy_method``). A server that dies
fails the case with its exit status and its log's last lines (``server.log`` in the case folder);
its metrics endpoint's last answer is kept as ``server-metrics.txt``.
"""

from __future__ import annotations

import math
import os
import time
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from harness.engines.client import (
    OPEN_LOOP_MIN_REQUESTS,
    completion_payload,
    default_requests,
    percentile,
    run_closed_loop,
    run_open_loop,
)
from harness.errors import HarnessError
from harness.schema import CaseShape, ModelWorkloadSettings
from harness.workloads.base import Repetition, Workload

PROMPT_SEED = 1234
#: the seed of an open loop's Poisson arrivals (the same arrivals for every variant)
ARRIVAL_SEED = 4321
#: the load generator's CPU, as a share of one core over the window, above which it is a warning
CLIENT_CPU_WARN = 0.10
#: an open loop served below this share of its offered rate did not keep up
KEPT_UP = 0.9
#: above this share of tokens read in one go with the one before, ITL is the client's, not the
#: server's
COALESCED_WARN = 0.10
#: extra context per slot beyond prompt and output (the server's own tokens, rounding)
CONTEXT_SLACK = 16
#: a steady window is never under this many update periods of the slowest sensor measuring it
MIN_UPDATE_PERIODS = 10
#: the client's energy is attributed this way where CPU energy is in the figure
CLIENT_ENERGY_METHOD = "cpu-time share"


def max_failed(share: float, requests: int) -> int:
    """How many of ``requests`` may fail before the case does (``max_failed_share``)."""
    return math.floor(share * requests + 1e-9)


def machine_cpu_busy_s() -> float | None:
    """Seconds of CPU time every core of this machine has spent busy since boot (/proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest is inside user)
    ticks = [int(x) for x in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def client_energy(
    m, idle_w: dict[str, float] | None, client_cpu_s: float, machine_busy_s: float | None
) -> dict[str, Any]:
    """The load generator's share of the window's energy, and the figures without it.

    Where CPU energy is in the figure, the client's share of it is its share of the CPU time all
    of the machine's processes used in the window (its own CPU time over the machine's busy time,
    from /proc/stat), applied to the CPU energy above idle where the idle baseline is known (the
    idle part is drawn whether the client runs or not), else to the CPU energy. That share is
    subtracted from ``energy_j``, ``energy_cpu_j`` and ``energy_dynamic_j``; the row keeps it as
    ``client_energy_j`` and says how in ``client_energy_method``.
    """
    from harness.records import measurement_columns
    from harness.sensors.domains import class_domains

    cpu_domains = [d for d in class_domains(m.domain_methods).get("cpu", []) if d in m.energy_j]
    in_total = any(d in m.total_domains for d in cpu_domains)
    if not cpu_domains or not in_total:
        return {
            "client_energy_j": None,
            "client_energy_method": "none: no CPU energy in the figure",
        }
    if not machine_busy_s or machine_busy_s <= 0:
        return {"client_energy_j": None, "client_energy_method": "none: no CPU time to share"}
    cpu_j = sum(m.energy_j[d] for d in cpu_domains)
    idle = sum((idle_w or {}).get(d, 0.0) for d in cpu_domains) * m.duration_s
    above_idle = idle_w is not None and all(d in idle_w for d in cpu_domains)
    base = max(0.0, cpu_j - idle) if above_idle else cpu_j
    share = min(1.0, max(0.0, client_cpu_s / machine_busy_s))
    client_j = base * share
    cols = measurement_columns(m, idle_w)
    out = {
        "client_energy_j": client_j,
        "client_energy_method": f"{CLIENT_ENERGY_METHOD} of the CPU energy"
        + (" above idle" if above_idle else "")
        + f" ({share:.1%} of the machine's CPU time), subtracted",
        "energy_j": m.total_j - client_j,
        "energy_cpu_j": (cols["energy_cpu_j"] or cpu_j) - client_j,
    }
    if cols.get("energy_dynamic_j") is not None:
        out["energy_dynamic_j"] = cols["energy_dynamic_j"] - client_j
    return out


def prompt_tokens_prefilled(metrics: str | None) -> float | None:
    """Prompt tokens a server says it prefilled, from its Prometheus text: llama.cpp's
    ``llamacpp:prompt_tokens_total`` (tokens it evaluated, cache hits excluded), vLLM's
    ``vllm:prompt_tokens_total`` less ``vllm:prefix_cache_hits_total`` (tokens served from its
    prefix cache); any ``*prompt_tokens_total`` counter. None when it reports none."""
    if not metrics:
        return None
    total = hits = None
    for line in metrics.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(" ")
        if "{" in name or "{" in line:
            name = line.split("{", 1)[0]
            rest = line.rsplit("}", 1)[-1]
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        if name.endswith("prompt_tokens_total"):
            total = (total or 0.0) + value
        elif name.endswith("prefix_cache_hits_total"):
            hits = (hits or 0.0) + value
    if total is None:
        return None
    return total - (hits or 0.0)


class ServeSettings(ModelWorkloadSettings):
    """The suite's serve block: a case per concurrency (closed loop) and per rate (open loop)."""

    type: Literal["serve"]
    #: closed-loop clients, a case each (empty: only the open-loop cases of ``rate_rps``)
    concurrency: list[Annotated[int, Field(ge=1)]] = []
    #: open-loop Poisson arrivals, requests per second, a case each; the server has ``slots``
    rate_rps: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = []
    #: the server's slots in an open-loop case (default: the largest concurrency, else 16)
    slots: Annotated[int, Field(ge=1)] | None = None
    #: requests per repetition (default: 4 x the case's concurrency, at least 10)
    requests: Annotated[int, Field(ge=1)] | None = None
    prompt_tokens: Annotated[int, Field(ge=1)]
    new_tokens: Annotated[int, Field(ge=2)]
    #: the server's port (None: a free one); a port in use fails the case in one line
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    #: measure with the server's prompt/prefix cache on (an axis of its own; default off)
    prefix_cache: bool = False
    #: a steady window shorter than this is a warning on its row (default: ServeCase's; never
    #: under 10 update periods of the slowest sensor)
    min_steady_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    #: the share of a repetition's requests that may fail before the case does (default:
    #: ServeCase's)
    max_failed_share: Annotated[float, Field(ge=0, le=1)] | None = None
    #: seconds without a token after which a request is a failed one (default: ServeCase's)
    request_timeout_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None

    @field_validator("concurrency", "rate_rps")
    @classmethod
    def _unique(cls, value: list, info) -> list:
        if len(set(value)) != len(value):
            raise ValueError(f"a {info.field_name} is listed twice")
        return value

    @model_validator(mode="after")
    def _enough_requests(self) -> ServeSettings:
        if not self.concurrency and not self.rate_rps:
            raise ValueError("serve needs a concurrency list, a rate_rps list, or both")
        if self.requests is None:
            return self  # each case sends 4 x its concurrency (default_requests)
        if self.concurrency and self.requests < max(self.concurrency):
            raise ValueError(
                f"requests: {self.requests} cannot keep {max(self.concurrency)} in flight "
                "(requests must be at least the largest concurrency)"
            )
        if self.rate_rps and self.requests < OPEN_LOOP_MIN_REQUESTS:
            raise ValueError(
                f"requests: {self.requests} is too few for an open loop's window "
                f"(rate_rps needs at least {OPEN_LOOP_MIN_REQUESTS})"
            )
        return self

    def open_loop_slots(self) -> int:
        return self.slots or (max(self.concurrency) if self.concurrency else 16)

    def shapes(self) -> list[tuple[dict, str, str]]:
        # prefix_cache is in a case only when on, so serve cases without it keep their ids
        cache = "-prefix-cache" if self.prefix_cache else ""
        base = {
            "type": self.type,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "port": self.port,
        }
        if self.prefix_cache:
            base["prefix_cache"] = True
        for key in ("min_steady_s", "max_failed_share", "request_timeout_s"):
            if getattr(self, key) is not None:
                base[key] = getattr(self, key)

        def one(c: int, rate: float | None, label: str) -> tuple[dict, str, str]:
            n = self.requests or default_requests(c)
            spec = {**base, "requests": n, "concurrency": c}
            if rate is not None:
                spec["rate_rps"] = rate
            shape = f"p{self.prompt_tokens}-n{self.new_tokens}-r{n}"
            long = f"{label}-c{c}" if rate is not None else label
            return spec, f"{label}{cache}", f"{long}-{shape}{cache}"

        slots = self.open_loop_slots()
        return [one(c, None, f"serve-c{c}") for c in self.concurrency] + [
            one(slots, rate, f"serve-rps{rate:g}") for rate in self.rate_rps
        ]


class ServeCase(CaseShape):
    """One serve case's workload dict (``ServeSettings.shapes``). A key the suite block leaves
    unset is not in the case (so the ids of cases without it stay as they were): its default is
    here."""

    type: Literal["serve"]
    #: the closed loop's clients, and the server's slots
    concurrency: Annotated[int, Field(gt=0)]
    #: an open-loop case's Poisson arrivals per second (None: a closed loop)
    rate_rps: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    requests: Annotated[int, Field(gt=0)]
    prompt_tokens: Annotated[int, Field(gt=0)]
    new_tokens: Annotated[int, Field(ge=2)]
    #: the server's port (None: a free one)
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    prefix_cache: bool = False
    #: the shortest steady window, seconds (ML.ENERGY's benchmark asks 30 s of a GPU run; a CPU
    #: serving a builtin model has less to show, a second still holds several waves)
    min_steady_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    #: the share of a repetition's requests that may fail before the case does
    max_failed_share: Annotated[float, Field(ge=0, le=1)] = 0.0
    #: seconds without a token after which a request is a failed one
    request_timeout_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 120.0


class ServeWorkload(Workload):
    type = "serve"
    settings = ServeSettings
    case = ServeCase
    shape: ServeCase
    engines = "served"
    uses_model = True
    unit = "request"
    shape_key = "concurrency"
    shape_word = "concurrency"
    compare_metrics = (
        "energy_per_request_j",
        "energy_per_token_j",
        "tokens_per_s",
        "ttft_s",
        "tpot_s",
    )
    stage = "inference"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.engine = None
        self._server_speeds: list[float] = []
        self._request_rows: list[dict] = []

    def setup(self) -> dict:
        from harness.engines import create_engine, engine_name
        from harness.hardware import apply_profile, describe

        case, shape = self.ctx.case, self.shape
        apply_profile(case["hardware"])
        name = engine_name(case.get("variant"))
        self.engine = create_engine(name)
        if not self.engine.serves:
            raise HarnessError(f"serve: engine {name} runs in-process; serve needs a server engine")
        self.engine.measure = self.ctx.meter.window
        self.engine.prefix_cache = shape.prefix_cache
        static = self.engine.load(
            case["model"], case.get("variant"), case["hardware"], self.ctx.artifacts_dir
        )
        context = self.engine.context_length()
        if context is not None and shape.prompt_tokens + shape.new_tokens > context:
            raise HarnessError(
                f"serve: prompt_tokens + new_tokens = {shape.prompt_tokens + shape.new_tokens} "
                f"exceeds the model's context of {context} tokens"
            )
        self.startup_s = self.engine.start(
            parallel=shape.concurrency,
            ctx_per_slot=shape.prompt_tokens + shape.new_tokens + CONTEXT_SLACK,
            log_path=self.ctx.case_dir / "server.log",
            port=shape.port,
        )
        self.model = static.get("model") or "model"
        self.warm_payloads = self._payloads(PROMPT_SEED)
        return {
            **static,
            "engine": name,
            "device_name": describe(case["hardware"])["device_name"],
            "concurrency": shape.concurrency,
            "rate_rps": shape.rate_rps,
            "prompt_tokens": shape.prompt_tokens,
            "new_tokens": shape.new_tokens,
            "prefix_cache": shape.prefix_cache,
        }

    def _payloads(self, seed: int) -> list[dict]:
        prompts = self.engine.prompt_ids(self.shape.requests, self.shape.prompt_tokens, seed)
        extra = self.engine.request_extra(self.shape.prefix_cache)
        return [completion_payload(self.model, p, self.shape.new_tokens, **extra) for p in prompts]

    def _load(self, payloads: list[dict], on_open, on_close):
        url = self.engine.completions_url
        allowed = max_failed(self.shape.max_failed_share, len(payloads))
        timeout = self.shape.request_timeout_s
        if self.shape.rate_rps is not None:
            return run_open_loop(
                url,
                payloads,
                self.shape.rate_rps,
                ARRIVAL_SEED,
                on_open,
                on_close,
                timeout,
                allowed,
            )
        return run_closed_loop(
            url, payloads, self.shape.concurrency, on_open, on_close, timeout, allowed
        )

    def warmup(self, iterations: int) -> None:
        """One unmeasured round of ``concurrency`` requests per iteration (threads, allocations),
        on prompts of their own: no measured prompt is ever in a cache from the warmup."""
        for _ in range(iterations):
            result = run_closed_loop(
                self.engine.completions_url,
                self.warm_payloads[: self.shape.concurrency],
                self.shape.concurrency,
                timeout_s=self.shape.request_timeout_s,
                max_failed=0,
            )
            if result.failed:
                self.engine.check_alive(wait_s=2.0)  # a dead server is the reason, with its log
                raise HarnessError(f"serve: a warmup request failed: {result.failed[0].error}")

    def run(self, repetition: int) -> Repetition:
        name = f"serve-{repetition}"
        holder: dict[str, Any] = {}
        meter, shape = self.ctx.meter, self.shape

        def on_open() -> None:
            meter.begin(name)
            holder["cpu0"], holder["busy0"] = time.process_time(), machine_cpu_busy_s()

        def on_close() -> None:
            holder["cpu1"], holder["busy1"] = time.process_time(), machine_cpu_busy_s()
            holder["m"] = meter.end(name)

        # every repetition its own prompts (unless a prompt cache is the thing measured: then
        # the warmup's, which the server has seen)
        payloads = (
            self.warm_payloads
            if shape.prefix_cache
            else self._payloads(PROMPT_SEED + 1 + repetition)
        )
        counted_before = prompt_tokens_prefilled(self.engine.metrics_text())
        try:
            result = self._load(payloads, on_open, on_close)
        finally:
            if "m" not in holder and name in meter._open:  # failed inside the window
                meter.end(name)
        counted_after = prompt_tokens_prefilled(self.engine.metrics_text())
        self._save_requests(repetition, result)
        failed = result.failed
        allowed = max_failed(shape.max_failed_share, shape.requests)
        if len(failed) > allowed:
            self.engine.check_alive(wait_s=2.0)  # a dead server is the reason, with its log
            raise HarnessError(
                f"serve: {len(failed)} of {len(result.requests)} requests sent failed "
                f"(max_failed_share {shape.max_failed_share:g} allows {allowed}); "
                f"the first: {failed[0].error}"
            )
        self.engine.check_alive()
        if "m" not in holder:
            raise HarnessError(
                f"serve: no steady state at concurrency {shape.concurrency} "
                f"({shape.requests} requests never had {shape.concurrency} in flight, each with "
                "its first token)"
            )  # an open loop always has its window: it opens and closes at scheduled arrivals
        m = holder["m"]
        if getattr(self.engine, "remote", False):
            from harness.engines.openai import REMOTE_WARNING

            m.warnings.append(REMOTE_WARNING)
        ok = result.ok
        if failed:
            m.warnings.append(
                f"serve: {len(failed)} of {len(result.requests)} requests failed (figures over "
                f"the {len(ok)} that succeeded); the first: {failed[0].error}"
            )
        tokens = result.tokens_in_window()
        ttft = [r.ttft_s for r in ok]
        itl = [x for r in ok for x in r.itl_s]
        latency = [r.latency_s for r in ok]
        tpots = [x for r in ok if (x := r.tpot_s) is not None]
        steady_s = m.duration_s
        speeds = [r.server_tokens_per_s for r in ok if r.server_tokens_per_s]
        self._server_speeds.extend(speeds)
        min_steady = self.min_steady_s()
        if steady_s < min_steady:
            m.warnings.append(
                f"serve: the steady window lasted {steady_s:.3g} s, under min_steady_s "
                f"{min_steady:.3g} s: too short a steady state to stand for the load "
                "(send more requests or longer ones)"
            )
        client_cpu_s = holder["cpu1"] - holder["cpu0"]
        client = client_energy(m, self.ctx.idle_w, client_cpu_s, holder["busy1"] - holder["busy0"])
        share = client_cpu_s / steady_s if steady_s > 0 else None
        if share is not None and share > CLIENT_CPU_WARN:
            what = (
                f"its share of the CPU energy by CPU time, {client['client_energy_j']:.3g} J, is "
                "subtracted from the figure (client_energy_j)"
                if client["client_energy_j"] is not None
                else "its energy is not in the figure (no CPU energy measured)"
            )
            m.warnings.append(
                f"the load generator used {share:.0%} of one core in the window, on the machine "
                f"measured: on a CPU server that is CPU the server could have used; {what}"
            )
        # tokens that came in one read with the one before carry its arrival time (ITL 0): the
        # client saw them together, because it could not read each as it came (a busy CPU)
        coalesced = sum(1 for x in itl if x == 0) / len(itl) if itl else 0.0
        if coalesced > COALESCED_WARN:
            m.warnings.append(
                f"{coalesced:.0%} of tokens reached the client in one read with the one before "
                "(inter-token latency 0): it could not read each as it came, so the ITL "
                "percentiles show the client's reads more than the server's pace"
            )
        lags = [r.lag_s for r in result.requests if r.lag_s is not None]
        served_rps = tokens / shape.new_tokens / steady_s if steady_s > 0 else None
        offered = result.offered_rps
        if offered is not None and served_rps is not None and served_rps < KEPT_UP * offered:
            m.warnings.append(
                f"the server served {served_rps:.3g} requests/s of the {offered:.3g} offered "
                f"in the window (asked: {shape.rate_rps:g}): it did not keep up, its queue grew "
                "through the window and the latencies grew with it (not a steady state)"
            )
        sent_prompt = len(result.requests) * shape.prompt_tokens
        server_prompt = (
            counted_after - counted_before
            if counted_after is not None and counted_before is not None
            else None
        )
        if server_prompt is not None and server_prompt != sent_prompt:
            m.warnings.append(
                f"serve: the server prefilled {server_prompt:g} prompt tokens of the "
                f"{sent_prompt} sent (its metrics)"
                + (": the rest came from its prompt cache" if server_prompt < sent_prompt else "")
            )
        columns: dict[str, Any] = {
            "concurrency": shape.concurrency,
            "rate_rps": shape.rate_rps,
            "offered_rps": offered,
            "arrivals": "poisson" if shape.rate_rps is not None else "closed-loop",
            "prefix_cache": shape.prefix_cache,
            "prompt_tokens": shape.prompt_tokens,
            "new_tokens": shape.new_tokens,
            "requests": len(result.requests),
            "requests_ok": len(ok),
            "requests_failed": len(failed),
            "first_error": failed[0].error if failed else None,
            "tokens_out": tokens,
            "tokens_in": len(ok) * shape.prompt_tokens,
            "sent_prompt_tokens": sent_prompt,
            "server_prompt_tokens": server_prompt,
            "queries": tokens / shape.new_tokens if tokens else None,
            "steady_s": steady_s,
            "min_steady_s": min_steady,
            "inflight_avg": result.inflight_avg(),
            "requests_per_s": served_rps,
            "ttft_s": percentile(ttft, 50),
            "ttft_p50_s": percentile(ttft, 50),
            "ttft_p90_s": percentile(ttft, 90),
            "ttft_p99_s": percentile(ttft, 99),
            "itl_p50_s": percentile(itl, 50),
            "itl_p90_s": percentile(itl, 90),
            "itl_p99_s": percentile(itl, 99),
            "tpot_s": percentile(tpots, 50),
            "tpot_p50_s": percentile(tpots, 50),
            "tpot_p90_s": percentile(tpots, 90),
            "tpot_p99_s": percentile(tpots, 99),
            "latency_p50_s": percentile(latency, 50),
            "latency_p90_s": percentile(latency, 90),
            "latency_p99_s": percentile(latency, 99),
            "load_wall_s": result.wall_s,
            "client_cpu_s": client_cpu_s,
            "itl_coalesced_share": coalesced,
            "arrival_lag_p99_s": percentile(lags, 99),
            "server_tokens_per_s": percentile(speeds, 50),
            **client,
        }
        energy = columns["energy_j"] if client["client_energy_j"] is not None else m.total_j
        per_token = energy / tokens if tokens else None
        columns["energy_per_request_j"] = per_token * shape.new_tokens if per_token else None
        return Repetition(measurement=m, columns=columns)

    def min_steady_s(self) -> float:
        """The shortest steady window that stands for its load: ``min_steady_s`` (default 1 s),
        and never under 10 update periods of the slowest sensor measuring it."""
        periods = [p for p in self.ctx.meter.update_periods_s.values() if p]
        floor = MIN_UPDATE_PERIODS * max(periods) if periods else 0.0
        return max(self.shape.min_steady_s, floor)

    def _save_requests(self, repetition: int, result) -> None:
        """One row per request of every repetition so far: ``requests.parquet``."""
        import pandas as pd

        from harness import atomic

        t0 = result.start_s
        for r in sorted(result.requests, key=lambda r: r.sent_s):
            self._request_rows.append(
                {
                    "repetition": repetition,
                    "request": r.index,
                    "sent_s": r.sent_s - t0,
                    "scheduled_s": r.scheduled_s - t0 if r.scheduled_s is not None else None,
                    "ttft_s": r.ttft_s,
                    "latency_s": r.latency_s,
                    "tpot_s": r.tpot_s,
                    "tokens": r.tokens,
                    "status": "ok" if r.ok else "failed",
                    "error": r.error,
                    "in_window": bool(
                        result.open_s is not None
                        and r.token_s
                        and r.token_s[0] <= result.close_s
                        and (r.end_s or 0) >= result.open_s
                    ),
                }
            )
        atomic.write_parquet(
            self.ctx.case_dir / "requests.parquet", pd.DataFrame(self._request_rows)
        )

    def summary(self) -> dict:
        return {
            "server_startup_s": getattr(self, "startup_s", None),
            "server_pid": getattr(self.engine, "server_pid", None),
            "server_tokens_per_s_p50": percentile(self._server_speeds, 50),
            "prompt_seed": PROMPT_SEED,
            "window": (
                "steady state: arrivals after the first tenth, until the last arrival"
                if self.shape.rate_rps is not None
                else "steady state: concurrency in flight with first tokens, until fewer remain"
            ),
        }

    def teardown(self) -> None:
        if self.engine is None:
            return
        try:
            text = self.engine.metrics_text()
            if text:
                from harness import atomic

                atomic.write_text(self.ctx.case_dir / "server-metrics.txt", text)
        finally:
            self.engine.close()
