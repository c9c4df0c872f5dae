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

``run_open_loop`` sends each request at its arrival in a seeded Poisson process of ``rate_rps``,
whatever is still in flight (the load a deployment sees: the server queues what its slots cannot
take). Its window opens at the arrival that ends the first tenth (``OPEN_LOOP_RAMP``) and closes
at the last arrival: before is ramp-up, after is drain.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
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
    #: when an open loop's arrivals made it due (perf_counter; None in a closed loop)
    scheduled_s: float | None = None

    @property
    def ttft_s(self) -> float | None:
        return self.token_s[0] - self.sent_s if self.token_s else None

    @property
    def itl_s(self) -> list[float]:
        return [b - a for a, b in zip(self.token_s, self.token_s[1:], strict=False)]

    @property
    def lag_s(self) -> float | None:
        """How late the client sent an open loop's request (its own delay, not the server's)."""
        return self.sent_s - self.scheduled_s if self.scheduled_s is not None else None

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


#: how a token chunk says it is one, as llama.cpp and vLLM write it (compact JSON): a choice whose
#: ``finish_reason`` is null. JSON escapes quotes inside strings, so these bytes cannot come from
#: a token's text; a chunk without them (the closing one, usage, an error, another server's
#: spacing) is parsed in full.
_TOKEN_MARK = b'"finish_reason":null'


def _parse_event(event: bytes, timing: RequestTiming, now: float) -> tuple[bool, bool]:
    """One server-sent event parsed in full: (it was a token, it was ``[DONE]``)."""
    token = False
    for line in event.split(b"\n"):
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return token, True
        try:
            chunk = json.loads(data)
        except ValueError:
            raise HarnessError(f"server streamed a line that is not JSON: {data[:120]!r}") from None
        if not isinstance(chunk, dict):
            raise HarnessError(f"server streamed JSON that is not an object: {data[:120]!r}")
        if "error" in chunk:
            raise HarnessError(f"server streamed an error: {str(chunk['error'])[:300]}")
        choices = chunk.get("choices") or []
        # a chunk with a choice is a token, except a closing one that carries no text
        if choices and (choices[0].get("text") or choices[0].get("finish_reason") is None):
            timing.token_s.append(now)
            token = True
        usage = chunk.get("usage")
        if usage and usage.get("completion_tokens") is not None:
            timing.usage_tokens = int(usage["completion_tokens"])
        timings = chunk.get("timings")
        if timings and timings.get("predicted_per_second"):
            timing.server_tokens_per_s = float(timings["predicted_per_second"])
            timing.server_busy_ms = float(timings.get("prompt_ms") or 0) + float(
                timings.get("predicted_ms") or 0
            )
    return token, False


async def _read_stream(resp, timing: RequestTiming, on_first: Callable[[], None] | None) -> None:
    """Read one streamed answer into ``timing``; ``on_first`` is called at its first token.

    The client's own CPU is taken from the server it measures when both share a CPU, so each read
    is split into events at once (``iter_any``: every event that arrived together is handled in
    one wake-up, stamped with the time it arrived) and a token chunk is recognised by its bytes
    (``_TOKEN_MARK``) rather than decoded; benchmarks/serve_overhead.py measures what it costs.
    """
    clock = time.perf_counter
    if resp.status != 200:
        body = (await resp.text())[:300].replace("\n", " ")
        raise HarnessError(f"server answered {resp.status} to a completion: {body}")
    tokens = timing.token_s
    tail = b""
    finished = False
    async for data in resp.content.iter_any():
        now = clock()
        if tail:
            data = tail + data
        if b"\r" in data:  # events may end in CRLF pairs; a split pair is whole again here
            data = data.replace(b"\r\n", b"\n")
        *events, tail = data.split(b"\n\n")
        for event in events:
            if _TOKEN_MARK in event:
                tokens.append(now)
                token = True
            else:
                token, finished = _parse_event(event, timing, now)
                if finished:
                    break
            if token and on_first is not None and len(tokens) == 1:
                on_first()
        if finished:
            break
    if not finished and tail.strip():  # a last event without its blank line
        token, _ = _parse_event(tail, timing, clock())
        if token and on_first is not None and len(tokens) == 1:
            on_first()
    timing.end_s = clock()


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


#: a connection opened ahead is used only while younger than this: servers close a connection
#: that has sent no request after a few seconds (llama.cpp's and uvicorn's keep-alive: 5 s)
SPARE_MAX_AGE_S = 1.0


def _spare_connector(limit: int):
    """An aiohttp connector that opens a connection per request (``force_close``: llama.cpp's
    server answers "Keep-Alive" yet closes the connection after a stream, and a POST on a closed
    connection fails) and keeps one opened ahead, so that the next request is sent at once: a
    connection costs this client about a millisecond of its own time (aiohttp's connector and
    the socket's setup), which was counted into the request's TTFT as if the server took it."""
    import aiohttp

    class SpareConnector(aiohttp.TCPConnector):
        def __init__(self) -> None:
            super().__init__(limit=limit, force_close=True)
            self._spare = None  # (opened at, protocol)
            self._opening = None

        async def _create_connection(self, req, traces, timeout):
            spare, self._spare = self._spare, None
            if spare is not None:
                born, proto = spare
                if proto.is_connected() and time.perf_counter() - born < SPARE_MAX_AGE_S:
                    self._open_ahead(req, timeout)
                    return proto
                proto.close()
            proto = await super()._create_connection(req, traces, timeout)
            self._open_ahead(req, timeout)
            return proto

        def _open_ahead(self, req, timeout) -> None:
            if self._opening is not None or self._closed:
                return

            async def open_one() -> None:
                try:
                    proto = await super(SpareConnector, self)._create_connection(req, [], timeout)
                except (OSError, aiohttp.ClientError, asyncio.TimeoutError):
                    return  # the next request's own connection reports what is wrong
                finally:
                    self._opening = None
                if self._closed or self._spare is not None:
                    proto.close()
                else:
                    self._spare = (time.perf_counter(), proto)

            self._opening = asyncio.ensure_future(open_one())

        def _close(self, *args, **kwargs):
            # aiohttp returns the waiters its close() awaits since 3.13; before, None and no wait
            waiters = super()._close(*args, **kwargs)
            if self._opening is not None:
                self._opening.cancel()
                if waiters is not None:
                    waiters.append(self._opening)
            if self._spare is not None:
                self._spare[1].close()
                self._spare = None
            return waiters

    return SpareConnector()


async def _cancel_all(tasks: list) -> None:
    """Cancel a load's request tasks and wait for them, when one failed or the load was stopped."""
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class _Load:
    """What a closed and an open loop share: the session, one timed request, the window, the
    watchdog that ends a load when a request has had no answer for ``timeout_s``."""

    def __init__(self, url: str, payloads: list[dict], on_open, on_close, timeout_s: float):
        self.url, self.payloads, self.timeout_s = url, payloads, timeout_s
        self.on_open, self.on_close = on_open, on_close
        self.done: list[RequestTiming] = []
        self.in_flight: dict[int, RequestTiming] = {}
        self.open_s: float | None = None
        self.close_s: float | None = None

    def open(self) -> None:
        if self.open_s is None:
            if self.on_open is not None:
                self.on_open()
            self.open_s = time.perf_counter()

    def close(self) -> None:
        if self.open_s is not None and self.close_s is None:
            self.close_s = time.perf_counter()
            if self.on_close is not None:
                self.on_close()

    async def request(self, session, index: int, on_first, scheduled_s: float | None = None):
        timing = RequestTiming(sent_s=time.perf_counter(), scheduled_s=scheduled_s)
        self.in_flight[index] = timing
        async with session.post(self.url, json=self.payloads[index]) as resp:
            await _read_stream(resp, timing, on_first)
        del self.in_flight[index]
        self.done.append(timing)

    async def _watchdog(self) -> None:
        # one check a second in place of a timer re-armed at every read (aiohttp's sock_read),
        # which cost the client a tenth of its time per token
        while True:
            await asyncio.sleep(min(1.0, self.timeout_s / 4))
            now = time.perf_counter()
            for t in list(self.in_flight.values()):
                if now - (t.token_s[-1] if t.token_s else t.sent_s) > self.timeout_s:
                    raise TimeoutError

    async def run(self, body, limit: int) -> LoadResult:
        """Run ``body(session)`` with at most ``limit`` connections (0: no limit)."""
        import aiohttp

        t0 = time.perf_counter()
        connector = _spare_connector(limit)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            work = asyncio.ensure_future(body(session))
            watchdog = asyncio.ensure_future(self._watchdog())
            try:
                await asyncio.wait({work, watchdog}, return_when=asyncio.FIRST_COMPLETED)
                if watchdog.done():
                    watchdog.result()  # raises the timeout
                await work
            finally:
                for task in (work, watchdog):
                    task.cancel()
                await asyncio.gather(work, watchdog, return_exceptions=True)
        self.close()  # a window still open when the last request ended closes there
        return LoadResult(self.done, self.open_s, self.close_s, time.perf_counter() - t0)


async def _closed_loop(load: _Load, concurrency: int) -> LoadResult:
    pending = list(range(len(load.payloads)))
    pending.reverse()
    ramped: set[int] = set()

    def first_token(client_id: int) -> None:
        # ramp-up ends when every client's request has had its first token: from then on all
        # concurrency slots are generating (a client that finished sends its next one at once)
        ramped.add(client_id)
        if len(ramped) == concurrency and len(load.in_flight) == concurrency:
            load.open()

    async def client(session, client_id: int) -> None:
        on_first = lambda: first_token(client_id)  # noqa: E731
        while pending:
            await load.request(session, pending.pop(), on_first)
            if not pending:  # the queue is empty and this one finished: fewer than concurrency
                load.close()

    async def body(session) -> None:
        tasks = [asyncio.ensure_future(client(session, i)) for i in range(concurrency)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            await _cancel_all(tasks)
            raise

    return await load.run(body, concurrency)


def poisson_schedule(count: int, rate_rps: float, seed: int) -> list[float]:
    """Seconds from the start at which each of ``count`` requests arrives: a Poisson process of
    ``rate_rps`` (exponential gaps), seeded so that every variant sees the same arrivals."""
    rng = random.Random(seed)
    at, out = 0.0, []
    for _ in range(count):
        out.append(at)
        at += rng.expovariate(rate_rps)
    return out


#: the share of an open loop's first arrivals that is ramp-up, outside the window
OPEN_LOOP_RAMP = 0.1
#: fewer requests leave an open loop's window too few arrivals to mean anything
OPEN_LOOP_MIN_REQUESTS = 10


async def _open_loop(load: _Load, schedule: list[float]) -> LoadResult:
    clock = time.perf_counter

    async def body(session) -> None:
        start = clock()
        ramp = max(1, math.ceil(len(schedule) * OPEN_LOOP_RAMP))
        tasks = []
        try:
            for index, offset in enumerate(schedule):
                due = start + offset
                if due > clock():
                    await asyncio.sleep(due - clock())
                if index == ramp:
                    load.open()
                tasks.append(asyncio.ensure_future(load.request(session, index, None, due)))
            # the last arrival: from here on the server only drains
            load.close()
            await asyncio.gather(*tasks)
        except BaseException:
            await _cancel_all(tasks)
            raise

    return await load.run(body, 0)


def _run(coroutine, url: str, timeout_s: float) -> LoadResult:
    """Run a load on uvloop where it is installed (its loop costs the client half the CPU per
    token of asyncio's own), turning connection faults into one line."""
    import aiohttp

    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(coroutine)
    except aiohttp.ClientError as e:
        raise HarnessError(f"serve: the connection to {url} failed: {e}") from None
    except TimeoutError:
        raise HarnessError(f"serve: no answer from {url} within {timeout_s:g} s") from None


def run_closed_loop(
    url: str,
    payloads: list[dict],
    concurrency: int,
    on_open: Callable[[], None] | None = None,
    on_close: Callable[[], None] | None = None,
    timeout_s: float = 120.0,
) -> LoadResult:
    """Send ``payloads`` with ``concurrency`` closed-loop clients; see the module's docstring."""
    if len(payloads) < concurrency:
        raise HarnessError(
            f"serve: {len(payloads)} requests cannot keep {concurrency} in flight "
            "(requests must be at least the concurrency)"
        )
    load = _Load(url, payloads, on_open, on_close, timeout_s)
    return _run(_closed_loop(load, concurrency), url, timeout_s)


def run_open_loop(
    url: str,
    payloads: list[dict],
    rate_rps: float,
    seed: int,
    on_open: Callable[[], None] | None = None,
    on_close: Callable[[], None] | None = None,
    timeout_s: float = 120.0,
) -> LoadResult:
    """Send ``payloads`` at Poisson arrivals of ``rate_rps``, each at its time whatever is still
    in flight (an open loop: the server's queue grows when it cannot keep up); see the module's
    docstring for the window."""
    if rate_rps <= 0 or not math.isfinite(rate_rps):
        raise HarnessError(f"serve: rate_rps must be a positive number, not {rate_rps}")
    if len(payloads) < OPEN_LOOP_MIN_REQUESTS:
        raise HarnessError(
            f"serve: an open loop needs at least {OPEN_LOOP_MIN_REQUESTS} requests "
            f"for a window after its ramp-up, not {len(payloads)}"
        )
    schedule = poisson_schedule(len(payloads), rate_rps, seed)
    load = _Load(url, payloads, on_open, on_close, timeout_s)
    return _run(_open_loop(load, schedule), url, timeout_s)


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation, numpy's default); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)
