"""What every engine behind an OpenAI-compatible server shares: its launch, URLs, liveness, stop.

llama.cpp, vLLM and a suite's own server differ only in the command that starts them and the URL
that says they are healthy (STYLE.md: "server engines share one client"); the process lifecycle is
``server.ServerProcess`` and the streamed requests ``client.py``.
"""

from __future__ import annotations

import random
from pathlib import Path

from harness.engines import Engine
from harness.engines.server import ServerProcess
from harness.errors import HarnessError


class ServedEngine(Engine):
    #: a server engine: workloads send it requests rather than calling generate
    serves = True
    server: ServerProcess | None = None
    #: the started server's pid (kept after it stopped: tests check that it is gone)
    server_pid: int | None = None
    base_url: str | None = None
    #: the ordinary token ids prompts are drawn from (set by ``load``)
    _vocab: list[int]
    #: serve with the server's prompt/prefix cache on (set before ``start``; default off, so
    #: every measured request is prefilled in full)
    prefix_cache: bool = False

    def request_extra(self, prefix_cache: bool) -> dict:
        """Fields each completion request adds: llama.cpp's ``cache_prompt`` (reuse a slot's
        cached prompt); servers without that extension ignore it."""
        return {"cache_prompt": bool(prefix_cache)}

    def prompt_ids(self, count: int, prompt_tokens: int, seed: int) -> list[list[int]]:
        """``count`` seeded prompts of exactly ``prompt_tokens`` ordinary token ids."""
        if not self._vocab:
            raise HarnessError(
                "the model's vocabulary has no ordinary tokens to build prompts from"
            )
        rng = random.Random(seed)
        return [[rng.choice(self._vocab) for _ in range(prompt_tokens)] for _ in range(count)]

    def launch(
        self,
        cmd: list[str],
        health_url: str,
        log_path: Path,
        health_timeout_s: float,
        *,
        name: str,
        env: dict[str, str] | None = None,
    ) -> float:
        """Start the server in its own process group and wait for health; seconds it took."""
        self.server = ServerProcess(cmd, health_url, log_path, env=env, name=name)
        self.server.start()
        self.server_pid = self.server.pid
        return self.server.wait_healthy(health_timeout_s)

    @property
    def completions_url(self) -> str:
        return f"{self.base_url}/v1/completions"

    def metrics_text(self) -> str | None:
        """The server's Prometheus metrics (``/metrics``), or None if it has none now."""
        import urllib.request

        if self.base_url is None:
            return None
        try:
            with urllib.request.urlopen(f"{self.base_url}/metrics", timeout=5) as r:
                return r.read().decode("utf-8", errors="replace")
        except OSError:
            return None

    def check_alive(self, wait_s: float = 0.0) -> None:
        if self.server is not None:
            self.server.check_alive(wait_s)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def close(self) -> None:
        self.stop()
