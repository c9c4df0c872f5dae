"""``EnergyCallback`` for Hugging Face transformers' ``Trainer`` (this module imports transformers).

```python
from harness.integrations.transformers import EnergyCallback
trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                  callbacks=[EnergyCallback("finetune", energy_budget_j=5e5)])
trainer.train()
```

The hooks only tell the one core (``harness.integrations.core``) that a step, an epoch or an
evaluation passed; the meter is read at block edges, never every step. Past the energy budget the
callback sets ``control.should_training_stop``, so the Trainer ends the way it ends on its own.
The Trainer has no hook for an exception: when ``train()`` raises, end the run yourself with
``callback.tracker.finish(error=str(e))`` (the case is then recorded as failed with that reason).
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from harness.integrations.core import TrainingTracker


def _dataset_len(dataloader: Any) -> int | None:
    try:
        return len(dataloader.dataset)
    except Exception:  # noqa: BLE001 - an iterable dataset has no length
        return None


class EnergyCallback(TrainerCallback):
    """Energy per step block and per epoch, forecast, budget and a run folder for a ``Trainer``.

    ``name``: the run's name; every other option is ``TrainingTracker``'s (``energy_budget_j``,
    ``forecast_fraction``, ``carbon``, ``out``, ``mlflow``, ...). After training, ``tracker`` holds
    the figures and ``run_dir`` the run folder.
    """

    def __init__(self, name: str = "train", **options: Any):
        self.name = name
        self.options = options
        # options are checked now, where a mistake is made, not when training starts
        self.tracker = TrainingTracker(name, integration="transformers", **options)

    @property
    def run_dir(self):
        return self.tracker.run_dir

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.tracker.started:  # a second trainer.train() with the same callback: a new run
            self.tracker = TrainingTracker(self.name, integration="transformers", **self.options)
        t = self.tracker
        t.model = t.model if t.model is not None else model
        t.set_total_steps(state.max_steps if state.max_steps and state.max_steps > 0 else None)
        if t.batch_size is None:
            t.batch_size = (
                args.per_device_train_batch_size
                * args.gradient_accumulation_steps
                * args.world_size
            )
        t.start()

    def on_step_end(self, args, state, control, **kwargs):
        if self.tracker.step():
            control.should_training_stop = True
        if control.should_evaluate:  # the Trainer evaluates right after this hook
            self.tracker.eval_begin()

    def on_epoch_end(self, args, state, control, **kwargs):
        evaluates = bool(control.should_evaluate)
        if evaluates:
            self.tracker.eval_begin()
        self.tracker.epoch_end(eval_follows=evaluates)
        if self.tracker.should_stop:
            control.should_training_stop = True

    def on_evaluate(self, args, state, control, metrics=None, eval_dataloader=None, **kwargs):
        self.tracker.eval_end(metrics or {}, samples=_dataset_len(eval_dataloader))
        if self.tracker.should_stop:
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.tracker.log_loss(logs["loss"])

    def on_train_end(self, args, state, control, **kwargs):
        self.tracker.finish()
