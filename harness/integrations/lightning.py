"""``EnergyCallback`` for Lightning's ``Trainer`` (this module imports lightning, or
pytorch_lightning where only that is installed).

```python
from harness.integrations.lightning import EnergyCallback
trainer = L.Trainer(max_epochs=3, callbacks=[EnergyCallback("finetune", energy_budget_j=5e5)])
trainer.fit(module, train_loader, val_loader)
```

The hooks only tell the one core (``harness.integrations.core``) that a step, an epoch or a
validation passed; the meter is read at block edges. Past the energy budget the callback sets
``trainer.should_stop``, so Lightning ends the fit the way it ends on its own.
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the older package name
    from pytorch_lightning.callbacks import Callback

from harness.integrations.core import TrainingTracker


def _planned_steps(trainer) -> int | None:
    try:
        steps = trainer.estimated_stepping_batches
    except Exception:  # noqa: BLE001 - an iterable dataset without a length
        return None
    if steps is None or steps == float("inf") or steps <= 0:
        return None
    return int(steps)


def _val_samples(trainer) -> int | None:
    loaders = trainer.val_dataloaders
    if loaders is None:
        return None
    if not isinstance(loaders, (list, tuple)):
        loaders = [loaders]
    try:
        return sum(len(dl.dataset) for dl in loaders)
    except Exception:  # noqa: BLE001 - an iterable dataset has no length
        return None


class EnergyCallback(Callback):
    """Energy per step block and per epoch, forecast, budget and a run folder for a ``Trainer``.

    ``name``: the run's name; every other option is ``TrainingTracker``'s (``energy_budget_j``,
    ``forecast_fraction``, ``carbon``, ``out``, ``mlflow``, ...). After ``fit``, ``tracker`` holds
    the figures and ``run_dir`` the run folder.
    """

    def __init__(self, name: str = "train", **options: Any):
        self.name = name
        self.options = options
        self.tracker = TrainingTracker(name, integration="lightning", **options)

    @property
    def run_dir(self):
        return self.tracker.run_dir

    def on_fit_start(self, trainer, pl_module):
        if self.tracker.started:  # a second fit with the same callback: a new run
            self.tracker = TrainingTracker(self.name, integration="lightning", **self.options)
        t = self.tracker
        t.model = t.model if t.model is not None else pl_module
        t.set_total_steps(_planned_steps(trainer))
        t.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        samples = None
        if self.tracker.batch_size is None:
            try:
                first = batch[0] if isinstance(batch, (list, tuple)) else batch
                samples = len(first)
            except Exception:  # noqa: BLE001 - a batch without a length
                samples = None
        # with gradient accumulation an optimizer step spans several batches
        accumulate = max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1))
        if (batch_idx + 1) % accumulate:
            return
        if self.tracker.step(loss=loss, samples=samples):
            trainer.should_stop = True

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.tracker.eval_begin()

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        self.tracker.eval_end(dict(trainer.callback_metrics), samples=_val_samples(trainer))
        if self.tracker.should_stop:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module):
        self.tracker.epoch_end()
        if self.tracker.should_stop:
            trainer.should_stop = True

    def on_fit_end(self, trainer, pl_module):
        self.tracker.finish()

    def on_exception(self, trainer, pl_module, exception):
        from harness.worker import error_line

        self.tracker.finish(error=error_line(exception))
