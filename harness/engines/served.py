"""What every engine behind an OpenAI-compatible server shares: its launch, URLs, liveness, stop.

llama.cpp, vLLM and a suite's own server differ only in the command that starts them and the URL
that says they are healthy (STYLE.md: "server engines share one client"); the process lifecycle is
``server.ServerProcess`` and the streamed requests ``client.py``.
"""

from __future__ import annotations

from pathlib import Path

from harness.engines import Engine
from harness.engines.server import ServerProcess


class ServedEngine(Engine):
    serves = True
    server: ServerProcess | None = None
    server_pid: int | None = None
    base_url: str | None = None

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
