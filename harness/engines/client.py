"""The serving client: streamed OpenAI completions under load, and the steady-state window.

asyncio with aiohttp, the OpenAI wire format (``POST /v1/completions``, ``stream: true``, server
sent events ``data: {...}`` ending with ``data: [DONE]``). Each streamed chunk that carries a choice
is one generated token (llama.cpp and vLLM stream one token per chunk); the count is checked
against the server's ``usage.completion_tokens`` when it sends one.

``run_closed_loop`` keeps ``concurrency`` requests in flight until ``requests`` have been sent.
The steady-state window (ARCHITECTURE.md, Measurement rules) opens when ``concurrency`` requests
are in flight and each client's request has had its first token (ramp-up over: every slot is
generating; a client whose request finished has sent its next at once), and closes as soon as
fewer than ``concurrency`` remain (the queue is empty and one has finished): ramp-up and drain
are outside it. Against a slow server that is the moment all ``concurrency`` requests have their
first token; against one that answers instantly it still opens, once every client got an answer.
``on_open`` / ``on_close`` are called at those instants (the serve workload opens and closes its
meter window there); tokens are counted by their arrival time inside the window.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError


@dataclass
class RequestTiming:
    """One streamed request: when it was sent, when each token came, when it ended (perf_counter)."""

    sent_s: float
    token_s: list[float] = field(default_factory=list)
    end_s: float | None = None
    #: the server's own count (usage.completion_tokens), when it sent one
    usage_tokens: int | None = None
    #: the server's own generation speed for this request (llama.cpp's timings), tokens/s
    server_tokens_per_s: float | None = None
    #: the server's own time for the request's prefill and decode (llama.cpp's timings), ms
    server_busy_ms: float | None = None

    @property
    def ttft_s(self) -> float | None:
        return self.token_s[0] - self.sent_s if self.token_s else None

    @property
    def itl_s(self) -> list[float]:
        return [b - a for a, b in zip(self.token_s, self.token_s[1:], strict=False)]

    @property
    def latency_s(self) -> float | None:
        return self.end_s - self.sent_s if self.end_s is not None else None


@dataclass
class LoadResult:
    requests: list[RequestTiming]
    open_s: float | None
    close_s: float | None
    wall_s: float

    @property
    def steady_s(self) -> float | None:
        if self.open_s is None or self.close_s is None:
            return None
        return self.close_s - self.open_s

    def tokens_in_window(self) -> int:
        if self.open_s is None or self.close_s is None:
            return 0
        lo, hi = self.open_s, self.close_s
        return sum(1 for r in self.requests for t in r.token_s if lo <= t <= hi)


async def _read_stream(resp, timing: RequestTiming, on_first: Callable[[], None] | None) -> None:
    """Read one streamed answer into ``timing``; ``on_first`` is called at its first token."""
    clock = time.perf_counter
    if resp.status != 200:
        body = (await resp.text())[:300].replace("\n", " ")
        raise HarnessError(f"server answered {resp.status} to a completion: {body}")
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        now = clock()
        try:
            chunk = json.loads(data)
        except ValueError:
            raise HarnessError(f"server streamed a line that is not JSON: {data[:120]!r}") from None
        if "error" in chunk:
            raise HarnessError(f"server streamed an error: {str(chunk['error'])[:300]}")
        choices = chunk.get("choices") or []
        # a chunk with a choice is a token, except a closing one that carries no text
        if choices and (choices[0].get("text") or choices[0].get("finish_reason") is None):
            timing.token_s.append(now)
            if on_first is not None and len(timing.token_s) == 1:
                on_first()
        usage = chunk.get("usage")
        if usage and usage.get("completion_tokens") is not None:
            timing.usage_tokens = int(usage["completion_tokens"])
        timings = chunk.get("timings")
        if timings and timings.get("predicted_per_second"):
            timing.server_tokens_per_s = float(timings["predicted_per_second"])
            timing.server_busy_ms = float(timings.get("prompt_ms") or 0) + float(
                timings.get("predicted_ms") or 0
            )
    timing.end_s = clock()


async def stream_completion(session, url: str, payload: dict) -> RequestTiming:
    """POST one streamed completion and time its tokens; a server error is a HarnessError."""
    timing = RequestTiming(sent_s=time.perf_counter())
    async with session.post(url, json=payload) as resp:
        await _read_stream(resp, timing, None)
    return timing


def completion_payload(model: str, prompt: Any, new_tokens: int, **extra: Any) -> dict:
    """A streamed, greedy completion of exactly ``new_tokens`` (end-of-sequence ignored where the
    server allows: ``ignore_eos`` is llama.cpp's and vLLM's extension)."""
    return {
        "model": model,
        "prompt": prompt,
        "max_tokens": new_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        **extra,
    }


async def _closed_loop(
    url: str,
    payloads: list[dict],
    concurrency: int,
    on_open: Callable[[], None] | None,
    on_close: Callable[[], None] | None,
    timeout_s: float,
) -> LoadResult:
    import aiohttp

    clock = time.perf_counter
    pending = list(range(len(payloads)))
    pending.reverse()
    done: list[RequestTiming] = []
    in_flight: dict[int, RequestTiming | None] = {}
    ramped: set[int] = set()
    state: dict[str, float | None] = {"open": None, "close": None}

    def maybe_open(client_id: int) -> None:
        # ramp-up ends when every client's request has had its first token: from then on all
        # concurrency slots are generating (a client that finished sends its next one at once)
        ramped.add(client_id)
        if state["open"] is None and len(ramped) == concurrency and len(in_flight) == concurrency:
            if on_open is not None:
                on_open()
            state["open"] = clock()

    def maybe_close() -> None:
        if state["open"] is not None and state["close"] is None and not pending:
            state["close"] = clock()
            if on_close is not None:
                on_close()

    async def one(session, index: int, client_id: int) -> None:
        payload = payloads[index]
        timing = RequestTiming(sent_s=clock())
        in_flight[index] = timing

        async with session.post(url, json=payload) as resp:
            # the window may open at the very token that completes the set of first tokens
            await _read_stream(resp, timing, lambda: maybe_open(client_id))
        del in_flight[index]
        done.append(timing)

    async def client(session, client_id: int) -> None:
        while pending:
            index = pending.pop()
            await one(session, index, client_id)
            # the queue is empty and this one finished: fewer than concurrency remain
            maybe_close()

    t0 = clock()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_s)
    # a connection per request: llama.cpp's server answers "Keep-Alive" yet closes the connection
    # after a stream, and a POST on a closed connection fails (aiohttp does not retry it)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        tasks = [asyncio.create_task(client(session, i)) for i in range(concurrency)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    if state["open"] is not None and state["close"] is None:
        maybe_close()
    return LoadResult(done, state["open"], state["close"], clock() - t0)


def run_closed_loop(
    url: str,
    payloads: list[dict],
    concurrency: int,
    on_open: Callable[[], None] | None = None,
    on_close: Callable[[], None] | None = None,
    timeout_s: float = 120.0,
) -> LoadResult:
    """Send ``payloads`` with ``concurrency`` closed-loop clients; see the module's docstring."""
    import aiohttp

    if len(payloads) < concurrency:
        raise HarnessError(
            f"serve: {len(payloads)} requests cannot keep {concurrency} in flight "
            "(requests must be at least the concurrency)"
        )
    try:
        return asyncio.run(_closed_loop(url, payloads, concurrency, on_open, on_close, timeout_s))
    except aiohttp.ClientError as e:
        raise HarnessError(f"serve: the connection to {url} failed: {e}") from None
    except TimeoutError:
        raise HarnessError(f"serve: no answer from {url} within {timeout_s:g} s") from None


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation, numpy's default); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)
