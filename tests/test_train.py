"""The train workload: real tiny models trained on the CPU, saved, and picked up again."""

from __future__ import annotations

import pytest
import torch
from modelkit import mc_accuracy

from harness.errors import HarnessError
from harness.meter import Meter
from harness.models import builtin, load_model
from harness.models.corpus import task_examples
from harness.models.tokenizer import load_tokenizer
from harness.records import derive, measurement_columns
from harness.workloads import Context, create
from harness.workloads.train import TRAIN_LR, Trainer, batches, chunk_sizes, lr_at

CPU = {"name": "cpu", "device": "cpu", "threads": None, "memory_limit_mb": None}


def _case(model: str = "tiny-xs", variant: dict | None = None, **workload) -> dict:
    return {
        "case_id": "t",
        "case": f"{model}/train",
        "suite": "test",
        "hardware": CPU,
        "model": {"name": model, "source": f"builtin:{model}"},
        "variant": variant or {"name": "fp32", "dtype": "float32", "quantization": None},
        "workload": {"type": "train", "steps": 20, "batch_size": 4, "seq_len": 16, **workload},
        "measurement": {"warmup": 1},
        "carbon": {},
    }


@pytest.fixture
def meter():
    with Meter(sensors=["estimate"], sample_hz=None) as m:
        yield m


def _context(tmp_path, meter, case: dict) -> Context:
    return Context(meter=meter, case=case, artifacts_dir=tmp_path / "artifacts", case_dir=tmp_path)


def test_chunks_and_schedule():
    assert chunk_sizes(23, 10) == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert sum(chunk_sizes(7, 7)) == 7
    rates = [lr_at(s, 200, 1e-3) for s in range(200)]
    assert rates[0] < rates[19] == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(1e-4, rel=0.05) and min(rates[20:]) >= 1e-4 * 0.99


def test_batches_are_seeded_and_cover_the_stream():
    ids = list(range(100))
    a, b = batches(ids, 3, 2, 10, seed=1), batches(ids, 3, 2, 10, seed=1)
    assert a.shape == (3, 2, 10) and torch.equal(a, b)
    assert not torch.equal(a, batches(ids, 3, 2, 10, seed=2))
    assert len({int(block[0]) for block in a.view(-1, 10)}) == 6  # no block twice in one pass
    with pytest.raises(HarnessError, match="fewer than seq_len"):
        batches(list(range(5)), 1, 1, 10)


def test_train_smoke_saves_a_model_that_later_loads_as_trained(tmp_path, meter):
    ctx = _context(tmp_path, meter, _case())
    workload = create(ctx)
    static = workload.setup()
    assert static["model"] == "tiny-xs" and static["dtype"] == "float32"
    assert static["params"] > 0 and static["device_name"]
    workload.warmup(0)  # no timing: the default ten chunks
    assert workload.planned_repetitions() == 10
    reps = [workload.run(i) for i in range(workload.planned_repetitions())]
    for rep in reps:
        cols = rep.columns
        assert cols["steps"] == 2 and cols["samples"] == 8 and cols["tokens_in"] == 2 * 4 * 16
        assert cols["seq_len"] == 16 and cols["batch_size"] == 4
        assert cols["peak_rss_mb"] > 50 and cols["peak_vram_mb"] is None
        assert rep.measurement.duration_s > 0
        record = derive(
            {**static, **measurement_columns(rep.measurement), **cols, "workload": "train"}
        )
        assert record["tokens_per_s"] == pytest.approx(cols["tokens_in"] / record["duration_s"])
    assert reps[-1].columns["loss"] < reps[0].columns["loss"]
    summary = workload.summary()
    assert summary["steps"] == 20 and len(summary["loss_curve"]) == 20
    assert summary["loss_curve"][0][0] == 1 and summary["loss_curve"][-1][0] == 20
    assert summary["tokens_per_s"] > 0
    saved = tmp_path / "artifacts" / "models" / "tiny-xs"
    assert summary["saved_path"] == str(saved) and (saved / "config.json").is_file()
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]  # no temp left
    trained_state = {k: v.clone() for k, v in workload.loaded.model.state_dict().items()}
    workload.teardown()

    lm = load_model(
        {"name": "tiny-xs", "source": "builtin:tiny-xs"}, None, CPU, tmp_path / "artifacts"
    )
    assert lm.trained is True and lm.path == saved
    for key, value in lm.model.state_dict().items():
        assert torch.equal(value, trained_state[key]), key
    fresh = load_model({"name": "tiny-xs", "source": "builtin:tiny-xs"}, None, CPU, tmp_path / "no")
    assert fresh.trained is False
    # a bf16 variant of the trained model is the trained weights, cast
    bf16 = load_model(
        {"name": "tiny-xs", "source": "builtin:tiny-xs"},
        {"dtype": "bfloat16"},
        CPU,
        tmp_path / "artifacts",
    )
    assert bf16.trained is True and next(bf16.model.parameters()).dtype == torch.bfloat16


def test_short_steps_are_batched_into_fewer_longer_chunks(tmp_path, meter):
    workload = create(_context(tmp_path, meter, _case(steps=30)))
    workload.setup()
    workload.warmup(1)  # tiny-xs steps take milliseconds: 30 of them fill few 0.2 s windows
    chunks = workload.planned_repetitions()
    assert 1 <= chunks < 10
    reps = [workload.run(i) for i in range(chunks)]
    assert sum(r.columns["steps"] for r in reps) == 30
    assert workload.summary()["chunks"] == chunks and workload.summary()["saved_path"]


def test_train_always_starts_from_the_seeded_init(tmp_path, meter):
    """A second train case of the same model does the same work, not more training on top."""
    losses = []
    for _ in range(2):
        workload = create(_context(tmp_path, meter, _case(steps=4)))
        workload.setup()
        losses.append(
            [workload.run(i).columns["loss"] for i in range(workload.planned_repetitions())]
        )
        workload.teardown()
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_checkpoint_of_another_builtin_is_refused(tmp_path):
    folder = tmp_path / "models" / "mine"
    builtin.build("tiny-xs").save_pretrained(folder)
    with pytest.raises(HarnessError, match="trained from builtin:tiny-xs, not builtin:tiny-s"):
        load_model({"name": "mine", "source": "builtin:tiny-s"}, None, CPU, tmp_path)


def test_bf16_training_and_text_file(tmp_path, meter):
    text = tmp_path / "story.txt"
    text.write_text("the red fox runs in the park .\n\n" * 40)
    case = _case(
        variant={"name": "bf16", "dtype": "bfloat16"}, steps=3, text_file=str(text), seq_len=8
    )
    workload = create(_context(tmp_path, meter, case))
    static = workload.setup()
    assert static["dtype"] == "bfloat16" and "autocast" in static["precision"]
    rep = workload.run(0)
    assert rep.columns["tokens_in"] == 4 * 8 and rep.columns["loss"] > 0


@pytest.mark.parametrize(
    "variant, match",
    [
        ({"dtype": "float32", "quantization": "int8-dynamic"}, "cannot be trained"),
        ({"dtype": "float16"}, "train float32 or bfloat16, not float16"),
    ],
)
def test_untrainable_variants(tmp_path, meter, variant, match):
    workload = create(_context(tmp_path, meter, _case(variant=variant)))
    with pytest.raises(HarnessError, match=match):
        workload.setup()


def test_bad_train_spec(tmp_path, meter):
    with pytest.raises(HarnessError, match="steps must be a positive integer"):
        create(_context(tmp_path, meter, _case(steps=0))).setup()
    with pytest.raises(HarnessError, match="does not exist"):
        create(_context(tmp_path, meter, _case(text_file=str(tmp_path / "no.txt")))).setup()


# ---------------------------------------------------------------------------- acceptance
TASKS = ("arith_mc", "successor_mc")


def _train_and_score(
    name: str, steps: int, batch_size: int, seq_len: int, tasks: tuple[str, ...]
) -> dict[str, float]:
    model = builtin.build(name)
    tok = load_tokenizer()
    trainer = Trainer(
        model, tok, torch.device("cpu"), steps=steps, batch_size=batch_size, seq_len=seq_len,
        lr=TRAIN_LR,
    )  # fmt: skip
    trainer.run_steps(steps)
    return {task: mc_accuracy(model, tok, task_examples(task, "test")) for task in tasks}


def test_larger_model_learns_more_in_a_short_budget():
    """CI-sized: after the same short budget the larger model is clearly better, on questions
    it never saw (held-out sums and successors)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steadier on a busy machine; the result does not depend on it
    try:
        small = _train_and_score("tiny-xs", 400, 8, 32, TASKS)
        large = _train_and_score("tiny-s", 400, 8, 32, TASKS)
    finally:
        torch.set_num_threads(threads)
    print("accuracy tiny-xs", small, "tiny-s", large)
    mean_small = sum(small.values()) / 2
    mean_large = sum(large.values()) / 2
    assert mean_large > mean_small + 0.1
    assert mean_large > 0.25 + 0.1


@pytest.mark.slow
def test_quickstart_recipe_gives_an_accuracy_gradient_by_size():
    """The quickstart recipe: three sizes, the same steps; accuracy grows with size."""
    acc = {
        name: _train_and_score(name, 400, 16, 64, ("arith_mc",))["arith_mc"]
        for name in ("tiny-xs", "tiny-s", "tiny-m")
    }
    print("arith_mc accuracy", acc)
    assert acc["tiny-m"] > acc["tiny-xs"] + 0.2
    assert acc["tiny-m"] > 0.25 + 0.3
    assert acc["tiny-s"] > acc["tiny-xs"]
