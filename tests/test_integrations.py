"""harness.integrations: the one core, harness.track, and the real transformers and Lightning
Trainers on a builtin model, each writing a run folder that report and leaderboard read."""

from __future__ import annotations

import json
import logging
import math

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.integrations import TrainingTracker, track
from harness.meter import Measurement

torch = pytest.importorskip("torch")


class CountingMeter:
    """A meter whose windows hold what the test says the steps used: 2 J and 0.1 s a step.

    It stands in for the sensors only where the core's arithmetic (blocks, forecast, budget) is
    checked against exact numbers; the Trainer tests below use the real Meter.
    """

    domains = ["cpu"]
    method = "estimated"
    domain_sources = {"cpu": "estimate"}
    statuses: list = []
    min_window_s = 0.0

    def __init__(self):
        self.j = 0.0
        self.t = 0.0
        self.open: dict[str, tuple[float, float]] = {}
        self.closed = False

    def work(self, steps: int = 1) -> None:
        self.j += 2.0 * steps
        self.t += 0.1 * steps

    def begin(self, name):
        assert name not in self.open
        self.open[name] = (self.j, self.t)

    def end(self, name):
        j0, t0 = self.open.pop(name)
        return Measurement(
            name, self.t - t0, {"cpu": self.j - j0}, self.j - j0, "estimated", ["estimate"]
        )

    def trace(self, *a):
        return []

    def close(self):
        self.closed = True


def _result(run_dir, workload="train") -> dict:
    for case_json in (run_dir / "cases").glob("*/case.json"):
        case = json.loads(case_json.read_text())
        if case["workload"]["type"] == workload:
            return json.loads((case_json.parent / "result.json").read_text())
    raise AssertionError(f"no {workload} case in {run_dir}")


def test_track_blocks_forecast_and_epochs_add_up(tmp_path):
    meter = CountingMeter()
    with track("plain", steps=100, out=tmp_path, meter=meter, report=False) as t:
        for i in range(100):
            meter.work()
            t.step()
            if (i + 1) % 50 == 0:
                t.epoch_end()
    assert not t.should_stop and t.steps_done == 100
    # the forecast after 10% of the steps: 5 blocks of 2 steps, every step 2 J and 0.1 s
    f = t.forecast
    assert f["forecast_after_steps"] == 10
    assert f["forecast_j"] == pytest.approx(200.0) and f["forecast_s"] == pytest.approx(10.0)
    assert f["forecast_j_ci_low"] <= 200.0 + 1e-9 <= f["forecast_j_ci_high"] + 2e-9
    assert [e["steps"] for e in t.epochs()] == [50, 50]
    assert [e["energy_j"] for e in t.epochs()] == pytest.approx([100.0, 100.0])
    result = _result(t.run_dir)
    assert result["status"] == "ok" and result["stop_reason"] == "planned"
    reps = result["repetitions"]
    assert sum(r["steps"] for r in reps) == 100
    assert sum(r["energy_j"] for r in reps) == pytest.approx(200.0)  # contiguous windows
    assert all(r["workload"] == "train" and r["case_id"] == result["case_id"] for r in reps)
    assert reps[-1]["forecast_j"] == pytest.approx(200.0)
    assert result["summary"]["epochs"][1]["energy_j"] == pytest.approx(100.0)
    assert meter.closed is False  # a meter given is the caller's to close
    manifest = json.loads((t.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["suite"]["name"] == "plain"


def test_track_budget_stops_on_the_forecast_with_the_reason(tmp_path, caplog):
    meter = CountingMeter()
    caplog.set_level(logging.WARNING, "harness.integrations")
    with track(
        "budget", steps=100, out=tmp_path, meter=meter, report=False, energy_budget_j=150
    ) as t:
        for _ in range(100):
            meter.work()
            if t.step():
                break
    # 20 J used after 10 steps, but 200 J forecast: stopped at the forecast, not at 150 J used
    assert t.steps_done == 10
    assert "forecast is 200 J" in t.stop_reason and "energy_budget_j 150 J" in t.stop_reason
    assert "stopping the training" in caplog.text and "forecast is 200 J" in caplog.text
    result = _result(t.run_dir)
    assert result["status"] == "failed" and result["stop_reason"] == "energy_budget"
    assert result["error"] == t.stop_reason and result["repetitions"]


def test_track_an_exception_fails_the_case_and_goes_on_up(tmp_path):
    meter = CountingMeter()
    with pytest.raises(ZeroDivisionError):
        with track("boom", steps=10, out=tmp_path, meter=meter, report=False) as t:
            meter.work()
            t.step()
            1 / 0  # noqa: B018
    result = _result(t.run_dir)
    assert result["status"] == "failed" and result["error"].startswith("ZeroDivisionError")


@pytest.mark.parametrize(
    "options, words",
    [
        ({"name": ""}, "name"),
        ({"name": "x", "steps": 0}, "steps must be a positive integer"),
        ({"name": "x", "forecast_fraction": 1.5}, "forecast_fraction"),
        ({"name": "x", "energy_budget_j": -1}, "energy_budget_j"),
        ({"name": "x", "carbon": {"pue": 1.2}}, "carbon"),
    ],
)
def test_bad_options_are_one_line(options, words):
    with pytest.raises(HarnessError, match=words):
        TrainingTracker(**options)


# ------------------------------------------------------------------ real trainers, builtin model
EPOCHS, TRAIN_N, BATCH, SEQ = 3, 16, 4, 16  # 4 steps an epoch, 12 in all: the forecast after 5


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is faster and steadier
    yield
    torch.set_num_threads(threads)


def _tokens(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 700, (n, SEQ), generator=g)


def _check_run(run_dir, model: str, *, evaluated: bool) -> dict:
    """Per-epoch energy, the forecast with its interval after 10% of the steps, report, leaderboard."""
    result = _result(run_dir)
    assert result["status"] == "ok", result["error"]
    epochs = result["summary"]["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(EPOCHS))
    assert all(e["energy_j"] > 0 and e["steps"] == TRAIN_N // BATCH for e in epochs)
    forecast = result["summary"]["forecast"]
    steps = EPOCHS * TRAIN_N // BATCH
    assert math.ceil(0.1 * steps) <= forecast["forecast_after_steps"] < steps
    assert forecast["forecast_j_ci_low"] <= forecast["forecast_j"] <= forecast["forecast_j_ci_high"]
    rep = result["repetitions"][-1]
    assert rep["params"] == 49472 and rep["model"] == model and rep["energy_method"]
    if evaluated:
        acc = _result(run_dir, "accuracy")
        assert acc["status"] == "ok" and 0.0 <= acc["repetitions"][0]["accuracy"] <= 1.0
        assert acc["repetitions"][0]["samples"] == 8
    assert main(["report", str(run_dir)]) == 0
    import pandas as pd

    summary = pd.read_csv(run_dir / "report" / "summary.csv")
    row = summary[summary["model"] == model].iloc[0]
    assert row["produce_j"] == pytest.approx(sum(r["energy_j"] for r in result["repetitions"]))
    assert row["params"] == 49472
    board = run_dir / "board.csv"
    assert main(["leaderboard", str(run_dir), "-o", str(board)]) == 0
    rows = pd.read_csv(board)
    assert model in set(rows["model"]) and (rows["run_id"] == run_dir.name).any()
    if evaluated:
        assert rows[rows["model"] == model]["accuracy"].notna().all()
    return result


def _hf_trainer(tmp_path, callback, epochs=EPOCHS):
    transformers = pytest.importorskip("transformers")
    from harness.models.builtin import build

    x = _tokens(TRAIN_N)
    data = [{"input_ids": row, "labels": row} for row in x]

    def accuracy(pred):
        logits, labels = pred
        return {"accuracy": float((logits[:, :-1].argmax(-1) == labels[:, 1:]).mean())}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        num_train_epochs=epochs,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=8,
        eval_strategy="epoch",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        logging_steps=2,
        disable_tqdm=True,
    )
    return transformers.Trainer(
        model=build("tiny-xs"),
        args=args,
        train_dataset=data,
        eval_dataset=data[:8],
        compute_metrics=accuracy,
        callbacks=[callback],
    )


def test_transformers_trainer_writes_a_run_that_report_and_leaderboard_read(tmp_path):
    pytest.importorskip("transformers")
    from harness.integrations.transformers import EnergyCallback

    callback = EnergyCallback("hf-train", out=tmp_path / "results", report=False, sample_hz=None)
    _hf_trainer(tmp_path, callback).train()
    _check_run(callback.run_dir, "tiny-xs", evaluated=True)
    losses = [r["loss"] for r in _result(callback.run_dir)["repetitions"] if r["loss"]]
    assert losses and all(0 < v < 20 for v in losses)  # the Trainer's logged loss rides along


def test_transformers_budget_stops_the_trainer_with_the_reason(tmp_path, caplog):
    pytest.importorskip("transformers")
    from harness.integrations.transformers import EnergyCallback

    caplog.set_level(logging.WARNING, "harness.integrations")
    callback = EnergyCallback(
        "hf-budget", out=tmp_path / "results", report=False, sample_hz=None, energy_budget_j=1e-9
    )
    trainer = _hf_trainer(tmp_path, callback)
    trainer.train()
    assert trainer.state.global_step < trainer.state.max_steps
    result = _result(callback.run_dir)
    assert result["status"] == "failed" and result["stop_reason"] == "energy_budget"
    assert result["error"].startswith("energy budget: after 1 of 12 steps")
    assert "stopping the training: energy budget" in caplog.text
    assert main(["report", str(callback.run_dir)]) == 0


def _lightning_fit(callback):
    L = pytest.importorskip("lightning")
    from harness.models.builtin import build

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = build("tiny-xs")

        def training_step(self, batch, i):
            (x,) = batch
            return self.net(input_ids=x, labels=x).loss

        def validation_step(self, batch, i):
            (x,) = batch
            logits = self.net(input_ids=x).logits
            self.log("val_acc", (logits[:, :-1].argmax(-1) == x[:, 1:]).float().mean())

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), 1e-3)

    x = _tokens(TRAIN_N)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=BATCH)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:8]), batch_size=8)
    trainer = L.Trainer(
        max_epochs=EPOCHS,
        callbacks=[callback],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(Module(), train, val)
    return trainer


def test_lightning_trainer_writes_a_run_that_report_and_leaderboard_read(tmp_path):
    pytest.importorskip("lightning")
    from harness.integrations.lightning import EnergyCallback

    callback = EnergyCallback(
        "pl-train", out=tmp_path / "results", report=False, sample_hz=None, model_name="tiny-xs"
    )
    _lightning_fit(callback)
    result = _check_run(callback.run_dir, "tiny-xs", evaluated=True)
    assert result["summary"]["integration"] == "lightning"


def test_lightning_budget_stops_the_trainer_with_the_reason(tmp_path, caplog):
    pytest.importorskip("lightning")
    from harness.integrations.lightning import EnergyCallback

    caplog.set_level(logging.WARNING, "harness.integrations")
    callback = EnergyCallback(
        "pl-budget", out=tmp_path / "results", report=False, sample_hz=None, energy_budget_j=1e-9
    )
    trainer = _lightning_fit(callback)
    assert trainer.global_step < EPOCHS * TRAIN_N // BATCH
    result = _result(callback.run_dir)
    assert result["status"] == "failed" and result["stop_reason"] == "energy_budget"
    assert "energy budget: after 1 of 12 steps" in result["error"]
    assert "stopping the training: energy budget" in caplog.text


def test_the_package_imports_neither_trainer_library():
    import subprocess
    import sys

    code = (
        "import sys, harness, harness.integrations; harness.track; "
        "print(any(m in sys.modules for m in ('transformers', 'lightning', 'pytorch_lightning')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_two_tracked_runs_of_one_training_compare_block_against_block(tmp_path, capsys):
    runs = []
    for _ in range(2):
        meter = CountingMeter()
        with track("same", steps=200, out=tmp_path, meter=meter, report=False) as t:
            for _ in range(200):
                meter.work()
                t.step()
        runs.append(t)
    # planned from the step counts alone: the same blocks, so compare sets like against like
    assert [r["steps"] for r in runs[0].records] == [r["steps"] for r in runs[1].records]
    assert main(["compare", str(runs[0].run_dir), str(runs[1].run_dir)]) == 0
    assert "0 regressions" in capsys.readouterr().out
