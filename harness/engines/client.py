"""The serving client: streamed OpenAI completions under load, and the steady-state window.

asyncio with aiohttp, the OpenAI wire format (``POST /v1/completions``, ``stream: true``, server
sent events ``data: {...}`` ending with ``data: [DONE]``). Each streamed chunk that carries a choice
is one generated token (llama.cpp and vLLM stream one token per chunk); the count is checked
against the server's ``usage.completion_tokens`` when it sends one.

``run_closed_loop`` keeps ``concurrency`` requests in flight until ``requests`` have been sent.
The steady-state window (ARCHITECTURE.md, Measurement rules; ML.ENERGY's definition) opens at the
first instant when ``concurrency`` requests are in flight and each of them has had its first token
(ramp-up over: every slot is generating), and closes as soon as fewer than ``concurrency`` remain
(the queue is empty and one has finished): ramp-up and drain are outside it. A client whose
request had a first token earlier does not count for the request it sent next: only the requests
in flight now do. ``on_open`` / ``on_close`` are called at those instants (the serve workload
opens and closes its meter window there); tokens are counted by their arrival time inside the
window, over successful requests.

A request that fails (an HTTP error status, a stream cut short or ending early, a line that is
not JSON, an error event, no token for ``timeout_s``) is a failed record with its error's text,
never the end of the loop; its client sends the next. ``max_failed`` ends the load early once
more requests than that have failed (the case fails anyway: no need to wait for the rest).

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
    #: its place in the load's payloads
    index: int = -1
    #: why it failed (None: it succeeded)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.end_s is not None

    @property
    def tokens(self) -> int:
        """Output tokens: the server's count where it sent one, else the token chunks read."""
        return self.usage_tokens if self.usage_tokens is not None else len(self.token_s)

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

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first, as vLLM, AIPerf and inference-perf define it:
        (latency - TTFT) / (output tokens - 1); None for a failed request or a single token."""
        return tpot(self.latency_s, self.ttft_s, self.tokens) if self.ok else None


def tpot(latency_s: float | None, ttft_s: float | None, tokens: int | None) -> float | None:
    """(latency - TTFT) / (tokens - 1): the one definition of TPOT (None when it has none)."""
    if latency_s is None or ttft_s is None or tokens is None or tokens < 2:
        return None
    return (latency_s - ttft_s) / (tokens - 1)


@dataclass
class LoadResult:
    requests: list[RequestTiming]
    open_s: float | None
    close_s: float | None
    wall_s: float
    #: when the load began (perf_counter): requests' send times are kept from here
    start_s: float = 0.0
    #: the load was ended early: more than ``max_failed`` requests failed
    aborted: bool = False
    #: an open loop's arrivals inside the window, per second (None: a closed loop)
    offered_rps: float | None = None

    @property
    def ok(self) -> list[RequestTiming]:
        return [r for r in self.requests if r.ok]

    @property
    def failed(self) -> list[RequestTiming]:
        """Failed requests in the order they were sent."""
        return sorted((r for r in self.requests if not r.ok), key=lambda r: r.sent_s)

    def inflight_avg(self) -> float | None:
        """Requests in flight (sent, not yet ended), averaged over the window's time: the load the
        server really had. A request in prefill counts: the server is working on it. (Counting
        only requests past their first token read 0.05-0.7 at concurrency 1 wherever TTFT holds
        most of a request's time, a client that kept its one request in flight all along.)"""
        steady = self.steady_s
        if not steady:
            return None
        lo, hi = self.open_s, self.close_s
        busy = 0.0
        for r in self.requests:
            end = r.end_s if r.end_s is not None else hi
            busy += max(0.0, min(end, hi) - max(r.sent_s, lo))
        return busy / steady

    @property
    def steady_s(self) -> float | None:
        if self.open_s is None or self.close_s is None:
            return None
        return self.close_s - self.open_s

    def tokens_in_window(self) -> int:
        """Tokens of successful requests that arrived inside the window."""
        if self.open_s is None or self.close_s is None:
            return 0
        lo, hi = self.open_s, self.close_s
        return sum(1 for r in self.requests if r.ok for t in r.token_s if lo <= t <= hi)


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


class _Aborted(Exception):
    """More requests failed than the load may lose: it ends at once."""


def describe_failure(exc: BaseException) -> str:
    """One line for what ended a request (the text kept as its error)."""
    import aiohttp

    if isinstance(exc, HarnessError):
        return str(exc)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the stream was cut before its end: {exc}"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return f"the connection failed: {exc or type(exc).__name__}"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "the connection timed out"
    return f"{type(exc).__name__}: {exc}"


class _Load:
    """What a closed and an open loop share: the session, one timed request, the window, the
    watchdog that fails a request that has had no answer for ``timeout_s``."""

    def __init__(
        self,
        url: str,
        payloads: list[dict],
        on_open,
        on_close,
        timeout_s: float,
        max_failed: int | None = None,
    ):
        self.url, self.payloads, self.timeout_s = url, payloads, timeout_s
        self.on_open, self.on_close = on_open, on_close
        self.max_failed = max_failed
        #: called as each request's stream ends (a closed loop closes its window there)
        self.on_end: Callable[[], None] | None = None
        self.done: list[RequestTiming] = []
        self.in_flight: dict[int, RequestTiming] = {}
        self.readers: dict[int, asyncio.Future] = {}
        self.failed = 0
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

    async def _stream(self, session, index: int, timing: RequestTiming, on_first) -> None:
        try:
            async with session.post(self.url, json=self.payloads[index]) as resp:
                await _read_stream(resp, timing, on_first)
        finally:
            # no longer in flight from the instant it ended, not a loop turn later
            self.in_flight.pop(index, None)
            if self.on_end is not None:
                self.on_end()

    async def request(self, session, index: int, on_first, scheduled_s: float | None = None):
        timing = RequestTiming(sent_s=time.perf_counter(), scheduled_s=scheduled_s, index=index)
        self.in_flight[index] = timing
        reader = asyncio.ensure_future(self._stream(session, index, timing, on_first))
        self.readers[index] = reader
        try:
            # waited on, not awaited: the watchdog cancelling a stalled reader fails this
            # request only, while cancelling this task (the load ends) still ends both
            await asyncio.wait({reader})
        except BaseException:
            reader.cancel()
            raise
        finally:
            self.in_flight.pop(index, None)
            del self.readers[index]
        if reader.cancelled():
            timing.error = timing.error or "cancelled"
        elif reader.exception() is not None:
            timing.error = describe_failure(reader.exception())
        else:
            want = self.payloads[index].get("max_tokens")
            if want is not None and timing.tokens != want:
                timing.error = (
                    f"the stream ended after {timing.tokens} tokens, not {want} "
                    "(cut short, or the server stopped early)"
                )
        if timing.error is not None:
            timing.end_s = time.perf_counter()
            self.failed += 1
        self.done.append(timing)
        if self.max_failed is not None and self.failed > self.max_failed:
            raise _Aborted

    async def _watchdog(self) -> None:
        # one check a second in place of a timer re-armed at every read (aiohttp's sock_read),
        # which cost the client a tenth of its time per token
        while True:
            await asyncio.sleep(min(1.0, self.timeout_s / 4))
            now = time.perf_counter()
            for index, t in list(self.in_flight.items()):
                last = t.token_s[-1] if t.token_s else t.sent_s
                reader = self.readers.get(index)
                if now - last > self.timeout_s and reader is not None and not reader.done():
                    what = "no token" if t.token_s else "no first token"
                    t.error = (
                        f"the stream stalled: {what} for {self.timeout_s:g} s "
                        f"(request_timeout_s) after {len(t.token_s)} tokens"
                    )
                    reader.cancel()

    async def run(self, body, limit: int) -> LoadResult:
        """Run ``body(session)`` with at most ``limit`` connections (0: no limit)."""
        import aiohttp

        t0 = time.perf_counter()
        aborted = False
        connector = _spare_connector(limit)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            work = asyncio.ensure_future(body(session))
            watchdog = asyncio.ensure_future(self._watchdog())
            try:
                await work
            except _Aborted:
                aborted = True
            finally:
                for task in (work, watchdog):
                    task.cancel()
                await asyncio.gather(work, watchdog, return_exceptions=True)
        if aborted:
            self.close_s = self.close_s or time.perf_counter()  # no window worth keeping
        self.close()  # a window still open when the last request ended closes there
        return LoadResult(
            self.done, self.open_s, self.close_s, time.perf_counter() - t0, t0, aborted
        )


async def _closed_loop(load: _Load, concurrency: int) -> LoadResult:
    pending = list(range(len(load.payloads)))
    pending.reverse()

    def first_token() -> None:
        # ramp-up ends when concurrency requests are in flight and each of them has had its
        # first token: every slot is generating (only a first token can make this true)
        if len(load.in_flight) == concurrency and all(t.token_s for t in load.in_flight.values()):
            load.open()

    def ended() -> None:
        if not pending:  # the queue is empty and one finished: fewer than concurrency remain
            load.close()

    load.on_end = ended

    async def client(session) -> None:
        while pending:
            await load.request(session, pending.pop(), first_token)
            if not pending:  # the queue is empty and this one finished: fewer than concurrency
                load.close()

    async def body(session) -> None:
        tasks = [asyncio.ensure_future(client(session)) for _ in range(concurrency)]
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


#: the default request count is this many times the concurrency: a steady phase between
#: ramp-up and drain several requests long
REQUESTS_PER_SLOT = 4


def default_requests(concurrency: int) -> int:
    """Requests a case sends when its suite names none: a steady phase several waves long."""
    return max(REQUESTS_PER_SLOT * concurrency, OPEN_LOOP_MIN_REQUESTS)


def open_loop_ramp(count: int) -> int:
    """The index of the arrival that opens an open loop's window."""
    return max(1, math.ceil(count * OPEN_LOOP_RAMP))


async def _open_loop(load: _Load, schedule: list[float]) -> LoadResult:
    clock = time.perf_counter

    async def body(session) -> None:
        start = clock()
        ramp = open_loop_ramp(len(schedule))
        tasks = []
        try:
            for index, offset in enumerate(schedule):
                due = start + offset
                if due > clock():
                    await asyncio.sleep(due - clock())
                if index == ramp:
                    load.open()
                if load.max_failed is not None and load.failed > load.max_failed:
                    raise _Aborted
                tasks.append(asyncio.ensure_future(load.request(session, index, None, due)))
            # the last arrival: from here on the server only drains
            load.close()
            await asyncio.gather(*tasks)
        except BaseException:
            await _cancel_all(tasks)
            raise

    result = await load.run(body, 0)
    if result.steady_s and not result.aborted:
        # the arrivals the window saw, per second: the seeded schedule's rate over so few
        # arrivals is not the asked one (and the client may have sent late)
        ramp = open_loop_ramp(len(schedule))
        result.offered_rps = (len(schedule) - 1 - ramp) / result.steady_s
    return result


def _run(coroutine, url: str, timeout_s: float) -> LoadResult:
    """Run a load on uvloop where it is installed (its loop costs the client half the CPU per
    token of asyncio's own), turning connection faults outside a request into one line."""
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
    max_failed: int | None = None,
) -> LoadResult:
    """Send ``payloads`` with ``concurrency`` closed-loop clients; see the module's docstring.

    ``timeout_s``: a request with no token for this long fails; ``max_failed``: the load ends
    once more requests than this have failed (None: it never does)."""
    if len(payloads) < concurrency:
        raise HarnessError(
            f"serve: {len(payloads)} requests cannot keep {concurrency} in flight "
            "(requests must be at least the concurrency)"
        )
    load = _Load(url, payloads, on_open, on_close, timeout_s, max_failed)
    return _run(_closed_loop(load, concurrency), url, timeout_s)


def run_open_loop(
    url: str,
    payloads: list[dict],
    rate_rps: float,
    seed: int,
    on_open: Callable[[], None] | None = None,
    on_close: Callable[[], None] | None = None,
    timeout_s: float = 120.0,
    max_failed: int | None = None,
) -> LoadResult:
    """Send ``payloads`` at Poisson arrivals of ``rate_rps``, each at its time whatever is still
    in flight (an open loop: the server's queue grows when it cannot keep up); see the module's
    docstring for the window, and ``run_closed_loop`` for ``timeout_s`` and ``max_failed``."""
    if rate_rps <= 0 or not math.isfinite(rate_rps):
        raise HarnessError(f"serve: rate_rps must be a positive number, not {rate_rps}")
    if len(payloads) < OPEN_LOOP_MIN_REQUESTS:
        raise HarnessError(
            f"serve: an open loop needs at least {OPEN_LOOP_MIN_REQUESTS} requests "
            f"for a window after its ramp-up, not {len(payloads)}"
        )
    schedule = poisson_schedule(len(payloads), rate_rps, seed)
    load = _Load(url, payloads, on_open, on_close, timeout_s, max_failed)
    return _run(_open_loop(load, schedule), url, timeout_s)


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation, numpy's default); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)
