"""Serve: streamed requests to the variant's model server, measured in its steady state only.

``{type: serve, concurrency, requests, prompt_tokens, new_tokens, port}`` (and a case's
``rate_rps``): the case exports the model for its engine (GGUF for llama.cpp, inside a meter
window: ``produce_j``), starts the server with ``concurrency`` slots in its own process group, and
stops it at the end (also on failure; the kernel kills it if the worker dies). Each repetition
sends ``requests`` streamed completions of exactly ``prompt_tokens`` token ids and ``new_tokens``
generated tokens (end-of-sequence ignored) from ``concurrency`` closed-loop clients
(``harness.engines.client``), or, in an open-loop case (``rate_rps``), at seeded Poisson arrivals
of that rate whatever is still in flight (the server queues what its slots cannot take).

The meter window is the steady state: closed-loop, it opens when ``concurrency`` requests are in
flight and all have their first token, and closes when fewer than ``concurrency`` remain;
open-loop, it opens at the arrival that ends the first tenth of arrivals and closes at the last
arrival (what follows is drain). A server that serves fewer requests per second in the window
than were offered gets a warning: its queue grew, and latencies with it. Inside it:
``tokens_out`` = tokens that arrived in the window, ``energy_per_token_j`` = window energy / those
tokens, ``energy_per_request_j`` = energy per token × ``new_tokens`` (a request's worth of
generated tokens at this concurrency, its prefill included as the server interleaves it),
``requests_per_s`` = tokens per second / ``new_tokens``. TTFT, inter-token latency and end-to-end
latency percentiles are over every request of the repetition. ``client_cpu_s`` is the load
generator's own CPU time in the window (this process); above a tenth of one core it is a warning,
since on a CPU server it ran on the machine measured and took CPU the server could have used. A
server that dies mid-window fails the case with its exit status and its log's last lines
(``server.log`` in the case folder); its metrics endpoint's last answer is kept as
``server-metrics.txt``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from harness.engines.client import (
    OPEN_LOOP_MIN_REQUESTS,
    completion_payload,
    percentile,
    run_closed_loop,
    run_open_loop,
)
from harness.errors import HarnessError
from harness.schema import ModelWorkloadSettings
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


class ServeSettings(ModelWorkloadSettings):
    """The suite's serve block: a case per concurrency (closed loop) and per rate (open loop)."""

    type: Literal["serve"]
    #: closed-loop clients, a case each (empty: only the open-loop cases of ``rate_rps``)
    concurrency: list[Annotated[int, Field(ge=1)]] = []
    #: open-loop Poisson arrivals, requests per second, a case each; the server has ``slots``
    rate_rps: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = []
    #: the server's slots in an open-loop case (default: the largest concurrency, else 16)
    slots: Annotated[int, Field(ge=1)] | None = None
    requests: Annotated[int, Field(ge=1)]
    prompt_tokens: Annotated[int, Field(ge=1)]
    new_tokens: Annotated[int, Field(ge=2)]
    #: the server's port (None: a free one); a port in use fails the case in one line
    port: Annotated[int, Field(ge=1, le=65535)] | None = None

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
        shape = f"p{self.prompt_tokens}-n{self.new_tokens}-r{self.requests}"
        base = {
            "type": self.type,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "port": self.port,
        }
        closed = [
            ({**base, "concurrency": c}, f"serve-c{c}", f"serve-c{c}-{shape}")
            for c in self.concurrency
        ]
        slots = self.open_loop_slots()
        return closed + [
            (
                {**base, "concurrency": slots, "rate_rps": rate},
                f"serve-rps{rate:g}",
                f"serve-rps{rate:g}-c{slots}-{shape}",
            )
            for rate in self.rate_rps
        ]


class ServeWorkload(Workload):
    type = "serve"
    settings = ServeSettings
    engines = "served"
    uses_model = True

    def __init__(self, ctx):
        super().__init__(ctx)
        spec = self.spec
        self.concurrency = int(spec["concurrency"])
        self.requests = int(spec["requests"])
        self.prompt_tokens = int(spec["prompt_tokens"])
        self.new_tokens = int(spec["new_tokens"])
        self.port = spec.get("port")
        self.rate_rps = float(spec["rate_rps"]) if spec.get("rate_rps") is not None else None
        self.engine = None
        self._server_speeds: list[float] = []

    def setup(self) -> dict:
        from harness.engines import create_engine, engine_name
        from harness.hardware import apply_profile, describe

        case = self.ctx.case
        apply_profile(case["hardware"])
        name = engine_name(case.get("variant"))
        self.engine = create_engine(name)
        if not self.engine.serves:
            raise HarnessError(f"serve: engine {name} runs in-process; serve needs a server engine")
        self.engine.measure = self.ctx.meter.window
        static = self.engine.load(
            case["model"], case.get("variant"), case["hardware"], self.ctx.artifacts_dir
        )
        context = self.engine.context_length()
        if context is not None and self.prompt_tokens + self.new_tokens > context:
            raise HarnessError(
                f"serve: prompt_tokens + new_tokens = {self.prompt_tokens + self.new_tokens} "
                f"exceeds the model's context of {context} tokens"
            )
        self.startup_s = self.engine.start(
            parallel=self.concurrency,
            ctx_per_slot=self.prompt_tokens + self.new_tokens + CONTEXT_SLACK,
            log_path=self.ctx.case_dir / "server.log",
            port=self.port,
        )
        prompts = self.engine.prompt_ids(self.requests, self.prompt_tokens, PROMPT_SEED)
        model = static.get("model") or "model"
        self.payloads = [completion_payload(model, p, self.new_tokens) for p in prompts]
        return {
            **static,
            "engine": name,
            "device_name": describe(case["hardware"])["device_name"],
            "concurrency": self.concurrency,
            "rate_rps": self.rate_rps,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
        }

    def _load(self, on_open, on_close):
        url = self.engine.completions_url
        if self.rate_rps is not None:
            return run_open_loop(url, self.payloads, self.rate_rps, ARRIVAL_SEED, on_open, on_close)
        return run_closed_loop(url, self.payloads, self.concurrency, on_open, on_close)

    def warmup(self, iterations: int) -> None:
        """One unmeasured round of ``concurrency`` requests per iteration (caches, threads)."""
        for _ in range(iterations):
            try:
                run_closed_loop(
                    self.engine.completions_url, self.payloads[: self.concurrency], self.concurrency
                )
            except HarnessError:
                self.engine.check_alive(wait_s=2.0)  # a dead server is the reason, with its log
                raise

    def run(self, repetition: int) -> Repetition:
        name = f"serve-{repetition}"
        holder: dict[str, Any] = {}
        meter = self.ctx.meter

        def on_open() -> None:
            meter.begin(name)
            holder["cpu0"] = time.process_time()

        def on_close() -> None:
            holder["cpu1"] = time.process_time()
            holder["m"] = meter.end(name)

        try:
            result = self._load(on_open, on_close)
        except HarnessError:
            self.engine.check_alive(wait_s=2.0)  # a dead server is the reason, with its log
            raise
        finally:
            if "m" not in holder and name in meter._open:  # failed inside the window
                meter.end(name)
        self.engine.check_alive()
        if "m" not in holder:
            raise HarnessError(
                f"serve: no steady state at concurrency {self.concurrency} "
                f"({self.requests} requests never had {self.concurrency} in flight with first tokens)"
            )  # an open loop always has its window: it opens and closes at scheduled arrivals
        m = holder["m"]
        if getattr(self.engine, "remote", False):
            from harness.engines.openai import REMOTE_WARNING

            m.warnings.append(REMOTE_WARNING)
        short = [r for r in result.requests if len(r.token_s) != self.new_tokens]
        if short:
            r = short[0]
            raise HarnessError(
                f"serve: a request returned {len(r.token_s)} tokens, not {self.new_tokens} "
                "(the server stopped early or merged tokens into one chunk)"
            )
        tokens = result.tokens_in_window()
        ttft = [r.ttft_s for r in result.requests if r.ttft_s is not None]
        itl = [x for r in result.requests for x in r.itl_s]
        latency = [r.latency_s for r in result.requests if r.latency_s is not None]
        steady_s = m.duration_s
        speeds = [r.server_tokens_per_s for r in result.requests if r.server_tokens_per_s]
        self._server_speeds.extend(speeds)
        per_token = m.total_j / tokens if tokens else None
        client_cpu_s = holder["cpu1"] - holder["cpu0"]
        share = client_cpu_s / steady_s if steady_s > 0 else None
        if share is not None and share > CLIENT_CPU_WARN:
            m.warnings.append(
                f"the load generator used {share:.0%} of one core in the window, on the machine "
                "measured: on a CPU server that is CPU the server could have used, and its energy "
                "is inside the figure"
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
        served_rps = tokens / self.new_tokens / steady_s if steady_s > 0 else None
        if self.rate_rps is not None and served_rps is not None:
            if served_rps < KEPT_UP * self.rate_rps:
                m.warnings.append(
                    f"the server served {served_rps:.3g} requests/s of the {self.rate_rps:g} "
                    "offered: it did not keep up, its queue grew through the window and the "
                    "latencies grew with it (not a steady state)"
                )
        columns: dict[str, Any] = {
            "concurrency": self.concurrency,
            "rate_rps": self.rate_rps,
            "arrivals": "poisson" if self.rate_rps is not None else "closed-loop",
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "requests": len(result.requests),
            "tokens_out": tokens,
            "tokens_in": len(result.requests) * self.prompt_tokens,
            "queries": tokens / self.new_tokens if tokens else None,
            "steady_s": steady_s,
            "energy_per_request_j": per_token * self.new_tokens if per_token else None,
            "requests_per_s": served_rps,
            "ttft_s": percentile(ttft, 50),
            "ttft_p50_s": percentile(ttft, 50),
            "ttft_p90_s": percentile(ttft, 90),
            "ttft_p99_s": percentile(ttft, 99),
            "itl_p50_s": percentile(itl, 50),
            "itl_p90_s": percentile(itl, 90),
            "itl_p99_s": percentile(itl, 99),
            "tpot_s": percentile(itl, 50),
            "latency_p50_s": percentile(latency, 50),
            "latency_p90_s": percentile(latency, 90),
            "latency_p99_s": percentile(latency, 99),
            "load_wall_s": result.wall_s,
            "client_cpu_s": client_cpu_s,
            "itl_coalesced_share": coalesced,
            "arrival_lag_p99_s": percentile(lags, 99),
            "server_tokens_per_s": percentile(speeds, 50),
        }
        return Repetition(measurement=m, columns=columns)

    def summary(self) -> dict:
        return {
            "server_startup_s": getattr(self, "startup_s", None),
            "server_pid": getattr(self.engine, "server_pid", None),
            "server_tokens_per_s_p50": percentile(self._server_speeds, 50),
            "prompt_seed": PROMPT_SEED,
            "window": (
                "steady state: arrivals after the first tenth, until the last arrival"
                if self.rate_rps is not None
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
