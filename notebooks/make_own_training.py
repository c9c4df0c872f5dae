"""Write notebooks/own_training.ipynb (outputs cleared). Run after editing the cells below:

python notebooks/make_own_training.py
"""

from __future__ import annotations

from nbkit import notebook, write

CELLS = [
    (
        "md",
        """# Energy of your own training

A Hugging Face `Trainer` fine-tunes a builtin model (tiny-xs, trained here, nothing downloaded)
with `harness.integrations.transformers.EnergyCallback`: energy per epoch, the forecast of the whole
training after its first tenth, with its 95% interval, set against what it then used; then a second
run with an energy budget, stopped early. Each run is a run folder that `harness report`,
`compare`, `leaderboard` and `site` read like a suite's.

Runs go to `$HARNESS_RESULTS` (default `results/`). On a machine without power sensors the energy
is estimated, and says so (`energy_method`).""",
    ),
    (
        "code",
        """import torch
from transformers import Trainer, TrainingArguments

from harness.integrations.transformers import EnergyCallback
from harness.models.builtin import build
from harness.models.tokenizer import load_tokenizer
from harness.workloads.train import batches, corpus_token_ids

torch.set_num_threads(1)
SEQ, N_TRAIN, N_EVAL = 32, 48, 16
ids = corpus_token_ids(load_tokenizer(), (N_TRAIN + N_EVAL) * SEQ)
rows = batches(ids, 1, N_TRAIN + N_EVAL, SEQ)[0]
train = [{"input_ids": r, "labels": r} for r in rows[:N_TRAIN]]
held_out = [{"input_ids": r, "labels": r} for r in rows[N_TRAIN:]]


def next_token_accuracy(pred):
    logits, labels = pred
    return {"accuracy": float((logits[:, :-1].argmax(-1) == labels[:, 1:]).mean())}


def trainer(callback, epochs=3):
    args = TrainingArguments(
        output_dir="hf-trainer", num_train_epochs=epochs, per_device_train_batch_size=4,
        per_device_eval_batch_size=16, eval_strategy="epoch", save_strategy="no",
        learning_rate=3e-3, report_to="none", use_cpu=True, logging_steps=4, disable_tqdm=True,
    )
    return Trainer(model=build("tiny-xs"), args=args, train_dataset=train, eval_dataset=held_out,
                   compute_metrics=next_token_accuracy, callbacks=[callback])""",
    ),
    (
        "md",
        """## A training, measured

Five lines in a training script: the callback, with a name for the run.""",
    ),
    (
        "code",
        """callback = EnergyCallback("own-training", report=True)
trainer(callback).train()
t = callback.tracker
print(f"run folder: {callback.run_dir}")
print(f"{t.steps_done} steps, energy {t.records[0]['energy_method']}")""",
    ),
    (
        "code",
        """import pandas as pd

epochs = pd.DataFrame(t.epochs())
epochs["j_per_step"] = epochs["energy_j"] / epochs["steps"]
epochs""",
    ),
    (
        "md",
        """## The forecast against the actual

After `forecast_fraction` (10%) of the steps the callback forecast the whole training's energy and
time: what it had used, plus the rest of the steps at the mean rate of its first blocks, with the
95% interval of that rate. Below, the energy used step by step, the forecast and its interval.""",
    ),
    (
        "code",
        """import io

import matplotlib.pyplot as plt
from IPython.display import Image, display

f = t.forecast
actual_j = sum(r["energy_j"] for r in t.records)
print(
    f"forecast after {f['forecast_after_steps']} of {t.total_steps} steps: {f['forecast_j']:.3g} J "
    f"(95% {f['forecast_j_ci_low']:.3g} to {f['forecast_j_ci_high']:.3g}); actual {actual_j:.3g} J "
    f"({100 * (f['forecast_j'] - actual_j) / actual_j:+.1f}%), "
    f"{'inside' if f['forecast_j_ci_low'] <= actual_j <= f['forecast_j_ci_high'] else 'outside'} "
    "the interval"
)
steps, used = [0], [0.0]
for r in t.records:
    steps.append(steps[-1] + r["steps"])
    used.append(used[-1] + r["energy_j"])
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.step(steps, used, where="post", label="energy used")
ax.errorbar([t.total_steps], [f["forecast_j"]],
            yerr=[[f["forecast_j"] - f["forecast_j_ci_low"]], [f["forecast_j_ci_high"] - f["forecast_j"]]],
            fmt="o", color="C3", capsize=4, label="forecast (95%)")
ax.axvline(f["forecast_after_steps"], color="grey", linestyle=":", label="forecast made")
ax.set_xlabel("step")
ax.set_ylabel(f"energy (J, {t.records[0]['energy_method']})")
ax.legend()
buf = io.BytesIO()
fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
plt.close(fig)
display(Image(buf.getvalue()))""",
    ),
    (
        "md",
        """## The run folder, as the report reads it

`produce_j` is the energy that made this model: the sum of the training's blocks. The accuracy is
the Trainer's last evaluation, an `accuracy` case of the same setup (task `eval`).""",
    ),
    (
        "code",
        """summary = pd.read_csv(callback.run_dir / "report" / "summary.csv")
summary[["model", "variant", "hardware", "energy_method", "params", "produce_j", "accuracy_eval"]]""",
    ),
    (
        "md",
        """## A second run, on a budget

`energy_budget_j` set to half of what the first run used: the callback stops the Trainer
(`control.should_training_stop`) at the first block edge where the forecast or the energy used
passes the budget, logs why, and records the case as failed with that reason.""",
    ),
    (
        "code",
        """budget_j = actual_j / 2
budgeted = EnergyCallback("own-training-budget", energy_budget_j=budget_j, report=False)
run = trainer(budgeted)
run.train()
b = budgeted.tracker
print(f"stopped after {b.steps_done} of {b.total_steps} steps: {b.stop_reason}")""",
    ),
]


def build():
    return notebook(CELLS)


if __name__ == "__main__":
    write(build(), "own_training.ipynb")
