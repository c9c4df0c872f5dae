"""The one core behind every training integration: step blocks, epochs, forecast, budget, run folder.

A ``TrainingTracker`` is told about a training from outside (a Trainer's callback, or the user's
own loop through ``harness.track``): ``start``, ``step`` after each optimizer step, ``epoch_end``,
``eval_begin`` / ``eval_end`` around an evaluation, ``finish``. It never drives the training.

Energy is read in *blocks* of steps, one meter window each; the windows are contiguous from the
start to the finish, so their sum is the whole training (evaluation and checkpointing included)
and the report's ``produce_j`` is that sum. A block closes after its planned steps, at the end of an
epoch (after that epoch's evaluation), or at the finish; a step costs a counter and a comparison,
the meter is read only at block edges (where the meter synchronises the GPU): the forecast's
blocks, then about ``BLOCKS_AFTER_FORECAST`` more, whatever the training's length. The first blocks are
the forecast's (``harness.workloads.forecast``): after ``forecast_fraction`` of the planned steps
the whole training's energy and time are forecast with their 95% interval. An
``energy_budget_j`` is checked at every block edge, against the forecast once there is one and
against the energy used so far: past it ``should_stop`` is set (each integration stops its trainer
by its own flag), the reason is logged, and the case is recorded as failed with that reason, like a
suite's training case (ARCHITECTURE.md, Measurement rules).

The results are a run folder like a suite's: ``manifest.json``, ``cases/<case_id>/`` with
``case.json``, ``trace.parquet`` and ``result.json`` (one repetition per block: a ``train`` case
with the model's ``params``), an ``accuracy`` case when the trainer evaluated an accuracy, then
``measurements.parquet`` and, unless ``report=False``, ``report/``.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

log = logging.getLogger("harness.integrations")

#: blocks after the forecast's: about this many over the rest of a training of known length
BLOCKS_AFTER_FORECAST = 20
#: blocks of a training of unknown length (until a step's time is known)
DEFAULT_BLOCK_STEPS = 50
#: stop reasons of an integration's case: the trainer ended on its own, or the budget stopped it
PLANNED = "planned"
ENERGY_BUDGET = "energy_budget"
#: metric names read as the accuracy of an evaluation, first found wins
ACCURACY_KEYS = (
    "eval_accuracy",
    "eval_acc",
    "val_accuracy",
    "val_acc",
    "accuracy",
    "acc",
    "test_accuracy",
    "test_acc",
)
VARIANT_OF_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}


@dataclass
class _Block:
    index: int
    first_step: int
    epoch: int
    #: steps after which the block closes (once the forecast's blocks are done)
    planned: int = 0
    steps: int = 0
    samples: int = 0
    tokens: int = 0
    losses: list = field(default_factory=list)


def model_facts(model: Any) -> dict:
    """``params``, ``model_size_mb`` and ``dtype`` of a torch module (nothing for anything else)."""
    try:
        params = list(model.parameters())
    except Exception:  # noqa: BLE001 - not a torch module: the columns stay empty
        return {}
    if not params:
        return {}
    facts = {
        "params": int(sum(p.numel() for p in params)),
        "model_size_mb": sum(p.numel() * p.element_size() for p in params) / 2**20,
        "dtype": str(params[0].dtype).removeprefix("torch."),
    }
    return facts


def model_identity(model: Any) -> tuple[str | None, str | None]:
    """A name and source for a transformers model: a builtin's name, else its path or class."""
    config = getattr(model, "config", None)
    if config is not None:
        from harness.models.builtin import CONFIG_KEY

        builtin = getattr(config, CONFIG_KEY, None)
        if isinstance(builtin, str) and builtin:
            return builtin, f"builtin:{builtin}"
        path = getattr(config, "_name_or_path", None)
        if isinstance(path, str) and path:
            return Path(path).name or path, f"path:{path}" if os.path.exists(path) else f"hf:{path}"
    if model is not None:
        return type(model).__name__, None
    return None, None


def _float(value: Any) -> float | None:
    try:
        v = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return v if math.isfinite(v) else None


def accuracy_in(metrics: dict, key: str | None = None) -> tuple[str, float] | None:
    """The accuracy among an evaluation's metrics: ``key``, else the first of ACCURACY_KEYS."""
    for k in [key] if key else ACCURACY_KEYS:
        if k in metrics and (v := _float(metrics[k])) is not None:
            return k, v
    return None


class TrainingTracker:
    """Energy of a training driven from outside; see the module's docstring.

    ``name``: the run's name (the run folder is ``<out>/<name>-<UTC time>-<hex>``). ``steps``: the
    planned optimizer steps (None: unknown, no forecast). ``model``: the torch module trained (its
    parameters give ``params``; a transformers model also its name). ``energy_budget_j``: stop past
    it. ``carbon``: a suite's carbon block (``{"country": "FRA"}``) for CO2e. ``mlflow``: also
    export the run folder to MLflow at the finish (``mlflow_tracking_uri``, else MLflow's default).
    """

    def __init__(
        self,
        name: str,
        steps: int | None = None,
        *,
        model: Any = None,
        model_name: str | None = None,
        variant: str | None = None,
        hardware: str | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        seq_len: int | None = None,
        block_steps: int | None = None,
        forecast_fraction: float | None = None,
        energy_budget_j: float | None = None,
        sensors: str | list = "auto",
        sample_hz: float | None = 10,
        tdp_w: float | None = None,
        carbon: dict | None = None,
        task: str = "eval",
        accuracy_key: str | None = None,
        out: str | os.PathLike | None = None,
        report: bool = True,
        mlflow: bool = False,
        mlflow_tracking_uri: str | None = None,
        integration: str = "track",
        meter: Any = None,
    ):
        from harness.workloads import forecast as forecast_mod

        if not isinstance(name, str) or not name.strip() or "/" in name:
            raise HarnessError(f"track: name must be a non-empty text without '/', not {name!r}")
        for key, value in (("steps", steps), ("block_steps", block_steps)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise HarnessError(f"track: {key} must be a positive integer, not {value!r}")
            if value is not None and value < 1:
                raise HarnessError(f"track: {key} must be a positive integer, not {value!r}")
        fraction = forecast_mod.DEFAULT_FRACTION if forecast_fraction is None else forecast_fraction
        if not 0 < float(fraction) < 1:
            raise HarnessError(f"track: forecast_fraction must be in (0, 1), not {fraction!r}")
        if energy_budget_j is not None and not float(energy_budget_j) > 0:
            raise HarnessError(f"track: energy_budget_j must be positive, not {energy_budget_j!r}")
        self.name = name.strip()
        self.total_steps = steps
        self.model = model
        self.model_name, self.model_source = model_name, None
        self.variant, self.hardware, self.device = variant, hardware, device
        self.batch_size, self.seq_len = batch_size, seq_len
        self.block_steps = block_steps
        self.forecast_fraction = float(fraction)
        self.energy_budget_j = float(energy_budget_j) if energy_budget_j is not None else None
        self.sensors, self.sample_hz, self.tdp_w = sensors, sample_hz, tdp_w
        self.carbon_block = self._check_carbon(carbon)
        self.task, self.accuracy_key = task, accuracy_key
        self.out = Path(out) if out is not None else None
        self.report, self.mlflow, self.mlflow_tracking_uri = report, mlflow, mlflow_tracking_uri
        self.integration = integration
        self._given_meter = meter
        self.meter = None
        self.run_dir: Path | None = None
        self.run_id: str | None = None
        #: the forecast (forecast_j, forecast_s with _ci_low/_ci_high, forecast_after_steps)
        self.forecast: dict | None = None
        #: why the training should stop (the budget), None while it may go on
        self.stop_reason: str | None = None
        self.steps_done = 0
        self.epoch = 0
        self.records: list[dict] = []
        self.evaluations: list[dict] = []
        self.warnings: list[str] = []
        self.started = False
        self.finished = False
        self._forecast_mod = forecast_mod
        self._bounds: list[int] = []
        self._forecast_blocks: list = []
        self._block: _Block | None = None
        self._close_after_eval = False
        self._eval_open: str | None = None
        self._eval_t0 = 0.0
        self._used_j = 0.0
        self._measured_steps = 0
        self._measured_s = 0.0
        self._train_base: dict | None = None
        self._t0 = 0.0

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _check_carbon(carbon: dict | None) -> dict | None:
        if carbon is None:
            return None
        from pydantic import ValidationError

        from harness.suite import Carbon

        try:
            return Carbon(**carbon).model_dump()
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "carbon"
            raise HarnessError(f"track: carbon {where}: {first.get('msg')}") from None
        except TypeError as e:
            raise HarnessError(f"track: carbon must be a mapping, not {carbon!r} ({e})") from None

    @property
    def should_stop(self) -> bool:
        return self.stop_reason is not None

    def set_total_steps(self, steps: int | None) -> None:
        """The planned steps, where the trainer knows them only once it starts."""
        if not self.started and steps is not None and steps > 0:
            self.total_steps = int(steps)

    def _plan(self) -> None:
        if self.total_steps:
            f = self._forecast_mod
            first = f.forecast_steps(self.total_steps, self.forecast_fraction)
            self._bounds = [end for _, end in f.block_bounds(first)]

    def _case(self, workload: dict) -> dict:
        from harness.suite import case_id
        from harness.workloads import trait

        model = {"name": self.model_name, "source": self.model_source}
        variant = {"name": self.variant, "dtype": self.dtype, "quantization": None}
        hw = {"name": self.hardware, "device": self.device}
        # a scoring case is named by its task, as the suite names it
        scores = trait(workload["type"], "scores", False)
        shape = f"{workload['type']}-{self.task}" if scores else workload["type"]
        case = {
            "suite": self.name,
            "case": f"{self.model_name}/{self.variant}/{self.hardware}/{shape}",
            "hardware": hw,
            "model": model,
            "variant": variant,
            "workload": workload,
            "measurement": {
                "sensors": self.sensors,
                "sample_hz": self.sample_hz,
                "tdp_w": self.tdp_w,
                "forecast_fraction": self.forecast_fraction,
                "energy_budget_j": self.energy_budget_j,
            },
            "carbon": self.carbon_block,
        }
        case["case_id"] = case_id(case)
        return case

    def start(self) -> TrainingTracker:
        """Open the meter and the run folder; the first block's window opens now."""
        if self.started:
            return self
        from harness import store
        from harness.meter import Meter

        facts = model_facts(self.model) if self.model is not None else {}
        name, source = model_identity(self.model)
        self.model_name = self.model_name or name or self.name
        self.model_source = source
        self.params = facts.get("params")
        self.model_size_mb = facts.get("model_size_mb")
        self.dtype = facts.get("dtype")
        self.variant = self.variant or VARIANT_OF_DTYPE.get(
            self.dtype or "", self.dtype or "default"
        )
        device = self.device or self._model_device() or "cpu"
        self.device = str(device)
        if self.device.startswith("cuda") and ":" not in self.device:
            self.device += ":0"
        self.hardware = self.hardware or self.device
        self.case = self._case(
            {
                "type": "train",
                "steps": self.total_steps,
                "batch_size": self.batch_size,
                "seq_len": self.seq_len,
                "integration": self.integration,
            }
        )
        self.run_id = store.new_run_id(self.name)
        self.run_dir = (self.out if self.out is not None else store.default_out()) / self.run_id
        self.meter = self._given_meter or Meter(
            sensors=self.sensors, sample_hz=self.sample_hz, tdp_w=self.tdp_w
        )
        self._carbon = self._carbon_settings()
        self._manifest = self._new_manifest()
        store.write_json(self.run_dir / store.MANIFEST, self._manifest)
        self._plan()
        self.started = True
        self._t0 = time.monotonic()
        self._started_at = store.utc_now()
        self._open_block()
        log.info("harness: measuring %s into %s", self.name, self.run_dir)
        return self

    def _model_device(self) -> str | None:
        try:
            return str(next(self.model.parameters()).device)
        except Exception:  # noqa: BLE001
            return None

    def _carbon_settings(self) -> dict | None:
        if self.carbon_block is None:
            return None
        from harness import carbon

        return carbon.settings(self.carbon_block)

    def _new_manifest(self) -> dict:
        from harness import store

        hw = {"name": self.hardware, "device": self.device}
        try:
            from harness.hardware import describe

            hw.update(describe(hw))
        except Exception:  # noqa: BLE001 - facts about the device are context, not a failure
            pass
        self.device_name = hw.get("device_name")
        suite = {"name": self.name, "description": f"a training measured by {self.integration}"}
        if self.carbon_block is not None:
            suite["carbon"] = self.carbon_block
        carbon = {**(self.carbon_block or {}), **(self._carbon or {})}
        return {
            "schema_version": store.SCHEMA_VERSION,
            "run_id": self.run_id,
            "suite": suite,
            "suite_file": None,
            "integration": self.integration,
            "started": store.utc_now(),
            "finished": None,
            "status": "running",
            "host": store.host_facts(),
            "hardware": [hw],
            "software": store.software_versions(),
            "git_sha": store.git_sha(),
            "sensors": [s.to_dict() for s in self.meter.statuses],
            "carbon": {k: v for k, v in carbon.items() if k != "intensity_series"} or None,
            "environment": store.safe_environment(),
            "workdir": str(Path.cwd()),
            "cases": [{"case_id": self.case["case_id"], "case": self.case["case"]}],
            "sessions": [{"started": store.utc_now(), "pid": os.getpid(), "finished": None}],
        }

    # ------------------------------------------------------------------ blocks
    def _open_block(self) -> None:
        index = len(self.records)
        self._block = _Block(index, self.steps_done + 1, self.epoch, self._planned_steps())
        self.meter.begin(f"block-{index}")

    def _block_full(self) -> bool:
        b = self._block
        if not b.steps:
            return False
        if self.total_steps and self.steps_done >= self.total_steps:
            return False  # the last block stays open until the finish
        if self.forecast is None and self._bounds:
            return self.steps_done in self._bounds
        return b.steps >= b.planned

    def _planned_steps(self) -> int:
        """Steps of a block after the forecast's: the rest of the training in
        BLOCKS_AFTER_FORECAST blocks, planned from the step counts alone so that two runs of the
        same training have like blocks (``harness compare`` sets block against block); longer only
        where a block would be shorter than the meter's shortest window worth measuring."""
        if self.block_steps:
            return self.block_steps
        if self.total_steps:
            rest = max(1, self.total_steps - (self._bounds[-1] if self._bounds else 0))
            n = math.ceil(rest / BLOCKS_AFTER_FORECAST)
        else:
            n = DEFAULT_BLOCK_STEPS
        if self._measured_steps and self._measured_s > 0 and self.meter.min_window_s > 0:
            step_s = self._measured_s / self._measured_steps
            n = max(n, math.ceil(self.meter.min_window_s / step_s))
        return n

    def step(self, n: int = 1, *, loss: Any = None, samples: int | None = None, tokens=None):
        """``n`` optimizer steps done (and their loss: a float or a tensor, read at block edges).

        Returns ``should_stop``. ``samples``/``tokens``: what the steps processed, when the batch
        size (and sequence length) given to the tracker do not say it.
        """
        if not self.started or self.finished:
            return self.should_stop
        b = self._block
        if not b.steps:  # a block belongs to the epoch of its steps (an evaluation may open it)
            b.epoch, b.first_step = self.epoch, self.steps_done + 1
        self.steps_done += n
        b.steps += n
        if samples is not None:
            b.samples += int(samples)
        elif self.batch_size:
            b.samples += n * self.batch_size
        if tokens is not None:
            b.tokens += int(tokens)
        elif self.batch_size and self.seq_len:
            b.tokens += n * self.batch_size * self.seq_len
        if loss is not None:
            b.losses.append(loss.detach() if hasattr(loss, "detach") else loss)
        if self._eval_open is None and self._block_full():
            self._next_block()
        return self.should_stop

    def log_loss(self, loss: Any) -> None:
        """A training loss the trainer logged (kept with the block open now)."""
        if self._block is not None and not self.finished:
            self._block.losses.append(loss.detach() if hasattr(loss, "detach") else loss)

    def epoch_end(self, *, eval_follows: bool = False) -> None:
        """An epoch ended; its block closes now, or after the evaluation that follows it."""
        if not self.started or self.finished:
            return
        last = bool(self.total_steps) and self.steps_done >= self.total_steps
        if eval_follows:
            self._close_after_eval = not last
        elif not last and self._block.steps:
            self._next_block()
        self.epoch += 1

    def _next_block(self) -> None:
        # after a stop too: what the trainer does until it ends (evaluation, saving) is measured
        self._close_block()
        self._open_block()

    def _close_block(self) -> None:
        b = self._block
        self._block = None
        m = self.meter.end(f"block-{b.index}")
        losses = [v for v in (_float(x) for x in b.losses) if v is not None]
        record = self._record(m, b, losses)
        self.records.append(record)
        self._used_j += m.total_j
        if b.steps:
            self._measured_steps += b.steps
            self._measured_s += m.duration_s
        if self.forecast is None and self._bounds and b.steps:
            f = self._forecast_mod
            self._forecast_blocks.append(f.Block(b.steps, m.total_j, m.duration_s))
            if self.steps_done >= self._bounds[-1]:
                self.forecast = f.forecast(self._forecast_blocks, self.total_steps)
                self._log_forecast()
        self._check_budget()

    def _record(self, m, b: _Block, losses: list[float]) -> dict:
        from harness import store
        from harness.records import derive, measurement_columns

        if self._train_base is None:  # the same identity for every block: built once
            self._train_base = self._base(self.case)
        record = dict(self._train_base)
        record.update(repetition=b.index, status=store.OK, error=None)
        record.update(measurement_columns(m))
        record.update(
            steps=b.steps,
            first_step=b.first_step,
            epoch=b.epoch,
            samples=b.samples or None,
            tokens_in=b.tokens or None,
            loss=sum(losses) / len(losses) if losses else None,
        )
        if self.forecast:
            record.update(self.forecast)
        derive(record, self._carbon)
        record["_window"] = m
        return record

    def _base(self, case: dict) -> dict:
        from harness import store

        base = store.identity_columns(case, self.run_id)
        base.update(
            node=socket.gethostname(),
            device_name=self.device_name,
            params=self.params,
            model_size_mb=self.model_size_mb,
        )
        return base

    def _log_forecast(self) -> None:
        f = self.forecast
        log.info(
            "harness: %s: after %d of %d steps the forecast is %.4g J (95%% %.4g-%.4g), %.4g s",
            self.name,
            f["forecast_after_steps"],
            self.total_steps,
            f["forecast_j"],
            f["forecast_j_ci_low"],
            f["forecast_j_ci_high"],
            f["forecast_s"],
        )

    def _check_budget(self) -> None:
        budget = self.energy_budget_j
        if budget is None or self.stop_reason is not None:
            return
        of = f" of {self.total_steps}" if self.total_steps else ""
        if self._used_j > budget:
            self.stop_reason = (
                f"energy budget: after {self.steps_done}{of} steps {self._used_j:.4g} J are used, "
                f"more than energy_budget_j {budget:g} J"
            )
        elif self.forecast is not None and self.forecast["forecast_j"] > budget:
            f = self.forecast
            self.stop_reason = (
                f"energy budget: after {f['forecast_after_steps']}{of} steps the forecast is "
                f"{f['forecast_j']:.4g} J (95% {f['forecast_j_ci_low']:.4g}-"
                f"{f['forecast_j_ci_high']:.4g}), more than energy_budget_j {budget:g} J"
            )
        if self.stop_reason is not None:
            log.warning("harness: %s: stopping the training: %s", self.name, self.stop_reason)

    # ------------------------------------------------------------------ evaluation
    def eval_begin(self) -> None:
        """An evaluation starts: its own window (inside the block's) gives the accuracy case's energy."""
        if not self.started or self.finished or self._eval_open is not None:
            return
        self._eval_open = f"eval-{len(self.evaluations)}"
        self._eval_t0 = time.monotonic()
        self.meter.begin(self._eval_open)

    def eval_end(
        self,
        metrics: dict | None = None,
        *,
        samples: int | None = None,
        accuracy: float | None = None,
    ) -> None:
        """The evaluation ended with ``metrics`` (an accuracy among them is kept)."""
        if not self.started or self.finished:
            return
        m = self.meter.end(self._eval_open) if self._eval_open is not None else None
        self._eval_open = None
        found = accuracy_in(metrics or {}, self.accuracy_key)
        if accuracy is not None:
            found = (self.accuracy_key or "accuracy", float(accuracy))
        self.evaluations.append(
            {
                "after_steps": self.steps_done,
                "epoch": self.epoch,
                "metrics": {k: v for k, v in ((k, _float(v)) for k, v in (metrics or {}).items())},
                "metric": found[0] if found else None,
                "accuracy": found[1] if found else None,
                "samples": samples,
                "window": m,
            }
        )
        if self._close_after_eval:
            self._close_after_eval = False
            self._next_block()
        elif self._block is not None and self._block_full():
            self._next_block()

    # ------------------------------------------------------------------ finish
    def finish(self, error: str | None = None) -> Path | None:
        """Close the last window and write the run folder; returns it. ``error``: the training failed."""
        if not self.started or self.finished:
            return self.run_dir
        self.finished = True
        from harness import store

        if self._eval_open is not None:
            self.meter.end(self._eval_open)
            self._eval_open = None
        if self._block is not None:  # an empty tail is kept too: its energy is the training's
            self._close_block()
        try:
            self._write(error)
        finally:
            if self._given_meter is None:
                self.meter.close()
        store.rebuild_measurements(self.run_dir)
        self._manifest["finished"] = store.utc_now()
        self._manifest["sessions"][0]["finished"] = self._manifest["finished"]
        self._manifest["status"] = "finished"
        store.write_json(self.run_dir / store.MANIFEST, self._manifest)
        if self.report:
            try:
                from harness.report import build_report

                build_report(self.run_dir)
            except Exception as e:  # noqa: BLE001 - a failing report never costs the results
                log.warning(
                    "harness: report failed (%s); retry: harness report %s", e, self.run_dir
                )
        if self.mlflow:
            from harness.exports.mlflow_export import export_run

            export_run(self.run_dir, tracking_uri=self.mlflow_tracking_uri)
        log.info("harness: %s: results in %s", self.name, self.run_dir)
        return self.run_dir

    def epochs(self) -> list[dict]:
        """Energy, time and steps per epoch (the sum of its blocks), in order."""
        out: dict[int, dict] = {}
        for r in self.records:
            e = out.setdefault(
                r["epoch"], {"epoch": r["epoch"], "steps": 0, "energy_j": 0.0, "duration_s": 0.0}
            )
            e["steps"] += r["steps"]
            e["energy_j"] += r["energy_j"]
            e["duration_s"] += r["duration_s"]
        return list(out.values())

    def _write(self, error: str | None) -> None:
        from harness import store
        from harness.worker import aggregates

        failed = error or self.stop_reason
        windows, warnings = [], []
        for r in self.records:
            m = r.pop("_window")
            windows.append(
                {
                    "repetition": r["repetition"],
                    "start_s": m.start_s,
                    "end_s": m.end_s,
                    "warnings": list(m.warnings),
                    "thermal": m.thermal,
                }
            )
            warnings += [w for w in m.warnings if w not in warnings]
        reason = ENERGY_BUDGET if self.stop_reason else (None if error else PLANNED)
        for r in self.records:
            r["stop_reason"] = reason
        epochs = self.epochs()
        result = {
            "schema_version": store.SCHEMA_VERSION,
            "case_id": self.case["case_id"],
            "case": self.case["case"],
            "status": store.FAILED if failed else store.OK,
            "error": failed,
            "stop_reason": reason,
            "started": self._started_at,
            "finished": store.utc_now(),
            "worker_pid": os.getpid(),
            "repetitions": self.records,
            "windows": windows,
            "aggregates": aggregates(self.records),
            "summary": {
                "integration": self.integration,
                "steps": self.steps_done,
                "planned_steps": self.total_steps,
                "epochs": epochs,
                "forecast": self.forecast,
                "energy_budget_j": self.energy_budget_j,
                "evaluations": [
                    {k: v for k, v in e.items() if k != "window"} for e in self.evaluations
                ],
                "energy_j": sum(r["energy_j"] for r in self.records),
                "duration_s": sum(r["duration_s"] for r in self.records),
            },
            "static": {"params": self.params, "model_size_mb": self.model_size_mb},
            "idle_w": None,
            "warnings": warnings,
            "meter": {
                "domains": self.meter.domains,
                "method": self.meter.method,
                "sources": sorted(set(self.meter.domain_sources.values())),
            },
            "timing": {"case_s": time.monotonic() - self._t0},
        }
        if self._carbon:
            result["carbon"] = {k: v for k, v in self._carbon.items() if k != "intensity_series"}
        folder = store.case_dir(self.run_dir, self.case["case_id"])
        store.write_json(folder / store.CASE_FILE, self.case)
        store.write_trace(folder / store.TRACE_FILE, self.meter.trace())
        store.write_json(folder / store.RESULT_FILE, result)
        if not failed:  # a stopped training's model is not the setup's: no accuracy for it
            self._write_accuracy()

    def _write_accuracy(self) -> None:
        """The last evaluation with an accuracy, as an ``accuracy`` case of the same setup."""
        from harness import store
        from harness.records import derive, measurement_columns
        from harness.worker import aggregates

        done = [e for e in self.evaluations if e["accuracy"] is not None and e["window"]]
        if not done:
            return
        e = done[-1]
        case = self._case({"type": "accuracy", "task": self.task, "integration": self.integration})
        record = self._base(case)
        record.update(repetition=0, status=store.OK, error=None, stop_reason=PLANNED)
        record.update(measurement_columns(e["window"]))
        record.update(
            metric=e["metric"],
            accuracy=e["accuracy"],
            samples=e["samples"],
            queries=e["samples"],
            evaluated_after_steps=e["after_steps"],
        )
        derive(record, self._carbon)
        m = e["window"]
        result = {
            "schema_version": store.SCHEMA_VERSION,
            "case_id": case["case_id"],
            "case": case["case"],
            "status": store.OK,
            "error": None,
            "stop_reason": PLANNED,
            "started": self._started_at,
            "finished": store.utc_now(),
            "repetitions": [record],
            "windows": [
                {"repetition": 0, "start_s": m.start_s, "end_s": m.end_s, "warnings": m.warnings}
            ],
            "aggregates": aggregates([record]),
            "summary": {"integration": self.integration, "after_steps": e["after_steps"]},
            "warnings": list(m.warnings),
        }
        folder = store.case_dir(self.run_dir, case["case_id"])
        store.write_json(folder / store.CASE_FILE, case)
        store.write_json(folder / store.RESULT_FILE, result)
        self._manifest["cases"].append({"case_id": case["case_id"], "case": case["case"]})
