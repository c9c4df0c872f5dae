"""lm-eval's completions model pointed at a model server, for accuracy through an engine.

lm-eval scores multiple choice by the log-likelihood of each continuation, which its
``local-completions`` model asks for with ``echo: true`` (the prompt's own log-probabilities).
llama.cpp's server refuses echo ("Only no echo is supported"), so this subclass asks for what
the server does give: the next token's full distribution (``n_probs`` = the vocabulary, before
sampling), once per continuation token, with the context and the continuation so far as token ids.
That is the same log-likelihood, computed by the served model (its quantisation included); the
server's prompt cache makes each further token of a continuation cheap. Generation
(``generate_until``) is lm-eval's own, unchanged.
"""

from __future__ import annotations

from typing import Any

import requests
from lm_eval.models.openai_completions import LocalCompletionsAPI

from harness.errors import HarnessError


def _top(answer: dict) -> list[dict]:
    """The candidates of the first generated position, from either answer format."""
    if "completion_probabilities" in answer:  # llama.cpp's native shape
        probs = answer["completion_probabilities"]
        return probs[0].get("top_logprobs") or probs[0].get("probs") or [] if probs else []
    choice = (answer.get("choices") or [{}])[0]
    content = (choice.get("logprobs") or {}).get("content") or []
    return content[0].get("top_logprobs") or [] if content else []


class ServerCompletionsLM(LocalCompletionsAPI):
    """``LocalCompletionsAPI`` whose log-likelihoods come from next-token distributions."""

    def __init__(self, base_url: str, model: str, tokenizer: str, vocab_size: int, **kwargs):
        super().__init__(
            base_url=base_url,
            model=model,
            tokenizer=tokenizer,
            tokenizer_backend="huggingface",
            tokenized_requests=True,
            max_length=kwargs.pop("max_length", 1024),
            **kwargs,
        )
        self.vocab_size = vocab_size
        self._session = requests.Session()

    def _next_token(self, prompt: list[int]) -> dict[int, float]:
        payload = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0.0,
            "n_probs": self.vocab_size,
            "post_sampling_probs": False,
            "cache_prompt": True,
        }
        r = self._session.post(self.base_url, json=payload, timeout=self.timeout)
        if r.status_code != 200:
            raise HarnessError(
                f"server answered {r.status_code} to a scoring request: {r.text[:200]}"
            )
        top = _top(r.json())
        if not top:
            raise HarnessError("the server gave no token probabilities (n_probs unsupported?)")
        return {int(t["id"]): float(t["logprob"]) for t in top if "id" in t}

    def _loglikelihood_tokens(self, requests_: list, **kwargs: Any) -> list[tuple[float, bool]]:
        out = []
        for _key, context_enc, continuation_enc in requests_:
            context = list(context_enc) or [self.prefix_token_id]
            total, greedy = 0.0, True
            for i, token in enumerate(continuation_enc):
                prompt = (context + list(continuation_enc[:i]))[-self.max_length :]
                dist = self._next_token(prompt)
                if token not in dist:
                    raise HarnessError(
                        f"the server's distribution lacks token {token} "
                        f"({len(dist)} of {self.vocab_size} returned)"
                    )
                total += dist[token]
                greedy &= token == max(dist, key=dist.get)
            out.append((total, greedy))
        return out
