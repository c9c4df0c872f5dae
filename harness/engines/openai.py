"""Any OpenAI-compatible server: started by a command the suite gives, or already running at a url.

``{engine: openai, command: [prog, --port, "{port}", ...], health_url: "http://127.0.0.1:{port}/health"}``
starts the program in its own process group (``{port}`` becomes a free port on 127.0.0.1) and
stops it at the end of the case, as llama.cpp's server is. ``{engine: openai, url: http://...}``
sends requests to a server that is already running; the harness then measures only this
machine's energy (its sensors), which the result says in a warning.

Prompts are token ids (the OpenAI wire format allows a list of ids as the prompt), drawn from the
model's tokenizer when the harness can load it (builtin and path: models), so prompt lengths are
exact.
"""

from __future__ import annotations

from pathlib import Path

from harness.engines import ordinary_token_ids
from harness.engines.served import ServedEngine
from harness.engines.server import HOST, ServerProcess, port_to_use
from harness.errors import HarnessError

REMOTE_WARNING = "openai: the server runs elsewhere; only this machine's energy was measured"


class OpenAIEngine(ServedEngine):
    name = "openai"
    #: the command that starts the server ({port} becomes a free port), its health URL, or the
    #: url of a server already running
    keys = ("command", "health_url", "url")

    @classmethod
    def check_variant(cls, variant) -> str | None:
        if (variant.command is None) == (variant.url is None):
            return "engine openai needs either command (with health_url) or url"
        if variant.command is not None and not variant.health_url:
            return "health_url: engine openai with a command needs its health URL"
        return None

    def __init__(self) -> None:
        self.measure = None
        self.variant: dict = {}
        self.columns: dict = {}
        self._vocab: list[int] = []
        self.remote = False

    def load(
        self, model: dict, variant: dict | None, hardware: dict, artifacts_dir: Path | None
    ) -> dict:
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            raise HarnessError(
                "engine openai needs the serve extra (aiohttp): pip install -e '.[serve]'"
            ) from None
        self.variant = dict(variant or {})
        self.remote = self.variant.get("url") is not None
        source = model.get("source") or ""
        self.columns = {
            "model": model.get("name"),
            "model_source": source,
            "quantization": self.variant.get("quantization"),
        }
        self._vocab = self._ordinary_ids(model, artifacts_dir)
        self.loaded = self.variant.get("url") or self.variant.get("command")
        self.device = "cpu"
        return dict(self.columns)

    @staticmethod
    def _ordinary_ids(model: dict, artifacts_dir: Path | None) -> list[int]:
        source = model.get("source") or ""
        if source.startswith(("builtin:", "path:")):
            try:
                if source.startswith("builtin:"):
                    from harness.models.tokenizer import load_tokenizer

                    tok = load_tokenizer()
                else:
                    from transformers import AutoTokenizer

                    tok = AutoTokenizer.from_pretrained(source.removeprefix("path:"))
                return ordinary_token_ids(tok)
            except Exception as e:  # a path without a tokenizer: say so rather than guess ids
                raise HarnessError(
                    f"engine openai: cannot load the tokenizer of {source}: {e}"
                ) from None
        raise HarnessError(
            f"engine openai builds token-id prompts from a builtin: or path: model, not {source}"
        )

    def start(
        self,
        parallel: int,
        ctx_per_slot: int,
        log_path: Path,
        port: int | None = None,
        health_timeout_s: float = 120.0,
    ) -> float:
        if self.remote:
            self.base_url = str(self.variant["url"]).rstrip("/")
            health = self.variant.get("health_url")
            if health:
                probe = ServerProcess(["true"], health, log_path, name="openai server")
                return _wait_remote(probe, health_timeout_s)
            return 0.0
        port = port_to_use(port)

        def fill(text: str) -> str:
            return (
                str(text)
                .replace("{port}", str(port))
                .replace("{parallel}", str(parallel))
                .replace("{host}", HOST)
            )

        cmd = [fill(c) for c in self.variant["command"]]
        health = fill(self.variant["health_url"])
        self.base_url = f"http://{HOST}:{port}"
        name = f"openai server ({Path(cmd[0]).name})"
        return self.launch(cmd, health, log_path, health_timeout_s, name=name)


def _wait_remote(probe: ServerProcess, timeout_s: float) -> float:
    import time
    import urllib.request

    t0 = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(probe.health_url, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        if time.monotonic() - t0 > timeout_s:
            raise HarnessError(
                f"the server at {probe.health_url} did not answer within {timeout_s:g} s"
            )
        time.sleep(0.2)
