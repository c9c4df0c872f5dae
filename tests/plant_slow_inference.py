"""A planted regression for the A/A tests of ``harness compare``: loaded into a worker through
HARNESS_PLUGINS, it makes every inference call of the transformers engine do its work 3 times."""

from __future__ import annotations

from harness.engines.transformers import TransformersEngine

_generate = TransformersEngine.generate


def _three_times(self, prompts, new_tokens):
    _generate(self, prompts, new_tokens)
    _generate(self, prompts, new_tokens)
    return _generate(self, prompts, new_tokens)


TransformersEngine.generate = _three_times
