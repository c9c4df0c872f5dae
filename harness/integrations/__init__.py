"""Energy of your own training: Trainer callbacks and a helper for a plain loop.

```python
import harness
with harness.track("finetune", steps=1000, model=model) as t:
    for batch in batches:
        train_step(batch)
        if t.step():          # True once the energy budget says stop
            break
```

``harness.integrations.transformers.EnergyCallback`` (Hugging Face ``Trainer``) and
``harness.integrations.lightning.EnergyCallback`` (Lightning ``Trainer``) do the same from the
trainer's hooks; each module imports its library, this package imports neither. All of them are
the one ``TrainingTracker`` (core.py) and write a run folder that ``harness report``,
``compare``, ``leaderboard`` and ``site`` read like a suite's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from harness.integrations.core import TrainingTracker

__all__ = ["TrainingTracker", "track"]


@contextmanager
def track(name: str, steps: int | None = None, **options) -> Iterator[TrainingTracker]:
    """Measure a plain training loop: call ``t.step()`` after each optimizer step.

    ``t.epoch_end()`` at the end of an epoch, ``t.eval_begin()`` / ``t.eval_end(metrics)`` around
    an evaluation. Options: those of ``TrainingTracker`` (model, energy_budget_j, carbon, out...).
    On leaving the block the run folder is written (``t.run_dir``); an exception inside records
    the case as failed with its reason and goes on up.
    """
    tracker = TrainingTracker(name, steps, **options).start()
    try:
        yield tracker
    except BaseException as e:
        from harness.worker import error_line

        tracker.finish(error="interrupted" if isinstance(e, KeyboardInterrupt) else error_line(e))
        raise
    tracker.finish()
