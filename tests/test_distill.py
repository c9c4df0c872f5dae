"""Distillation and fine-tuning: the loss, the teacher's passes inside the windows, the saves."""

from __future__ import annotations

import math

import pytest
import torch

from harness.errors import HarnessError
from harness.meter import Meter
from harness.models import builtin, load_model
from harness.workloads import Context, create
from harness.workloads.distill import distillation_loss
from harness.workloads.train import save_atomically

CPU = {"name": "cpu-1t", "device": "cpu", "threads": 1, "memory_limit_mb": None}
FP32 = {"name": "fp32", "dtype": "float32", "quantization": None}


@pytest.fixture
def meter():
    with Meter(sensors=["estimate"], sample_hz=None) as m:
        yield m


def _context(tmp_path, meter, case: dict) -> Context:
    return Context(meter=meter, case=case, artifacts_dir=tmp_path / "artifacts", case_dir=tmp_path)


def _teacher(tmp_path, name: str = "teach", size: str = "tiny-s") -> dict:
    """A teacher checkpoint where a train case would have saved it (a seeded init, saved)."""
    from harness.models.tokenizer import load_tokenizer

    save_atomically(
        builtin.build(size, seed=7), load_tokenizer(), tmp_path / "artifacts" / "models" / name
    )
    return {"name": name, "source": f"builtin:{size}", "trust_remote_code": False}


def _distill_case(teacher: dict, **workload) -> dict:
    return {
        "case_id": "d",
        "case": "stud/fp32/cpu/distill",
        "suite": "test",
        "hardware": CPU,
        "model": {"name": "stud", "source": "builtin:tiny-xs"},
        "variant": FP32,
        "workload": {
            "type": "distill",
            "teacher": teacher["name"],
            "teacher_model": teacher,
            "steps": 10,
            "batch_size": 4,
            "seq_len": 16,
            "temperature": 2.0,
            "alpha": 0.5,
            **workload,
        },
        "measurement": {"warmup": 0},
        "carbon": {},
    }


def test_distillation_loss_mixes_soft_and_hard_targets():
    torch.manual_seed(0)
    labels = torch.randint(0, 11, (2, 5))
    student = torch.randn(2, 5, 11, requires_grad=True)
    teacher = torch.randn(2, 5, 11)
    hard = torch.nn.functional.cross_entropy(
        student[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1)
    )
    # alpha 0: the ordinary next-token loss, whatever the teacher says
    assert distillation_loss(student, teacher, labels, 2.0, 0.0).item() == pytest.approx(
        hard.item()
    )
    # alpha 1 and the teacher's own logits: nothing left to learn
    assert distillation_loss(teacher, teacher, labels, 2.0, 1.0).item() == pytest.approx(
        0, abs=1e-6
    )
    # the soft part is T² × KL(teacher ‖ student) at temperature T, per predicted position
    t, s = torch.log_softmax(teacher[:, :-1] / 3, -1), torch.log_softmax(student[:, :-1] / 3, -1)
    kl = (t.exp() * (t - s)).sum(-1).mean() * 9
    soft = distillation_loss(student, teacher, labels, 3.0, 1.0)
    assert soft.item() == pytest.approx(kl.item(), rel=1e-5)
    mixed = distillation_loss(student, teacher, labels, 3.0, 0.25)
    assert mixed.item() == pytest.approx(0.25 * kl.item() + 0.75 * hard.item(), rel=1e-5)
    mixed.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_distill_workload_learns_from_the_teacher_inside_the_windows(tmp_path, meter):
    teacher = _teacher(tmp_path)
    before = load_model(teacher, FP32, CPU, tmp_path / "artifacts")
    teacher_state = {k: v.clone() for k, v in before.model.state_dict().items()}
    workload = create(_context(tmp_path, meter, _distill_case(teacher)))
    static = workload.setup()
    assert static["teacher"] == "teach" and static["teacher_params"] == before.params
    calls_in_windows = []
    for i in range(workload.planned_repetitions()):
        start = workload.trainer.teacher_calls
        rep = workload.run(i)
        # every step of the chunk asked the teacher, inside the chunk's window
        calls_in_windows.append(workload.trainer.teacher_calls - start == rep.columns["steps"])
    assert all(calls_in_windows) and workload.trainer.teacher_calls == 10
    summary = workload.summary()
    assert summary["teacher_calls"] == 10 and summary["forecast"]["forecast_j"] > 0
    # the teacher taught; it did not learn
    for key, value in workload.teacher.model.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key
    saved = tmp_path / "artifacts" / "models" / "stud"
    assert summary["saved_path"] == str(saved)
    workload.teardown()
    student = load_model(
        {"name": "stud", "source": "builtin:tiny-xs"}, FP32, CPU, tmp_path / "artifacts"
    )
    assert student.trained is True


def test_distilled_student_moves_towards_the_teacher(tmp_path, meter):
    """With alpha 1 the student's outputs get closer to the teacher's than the seeded init's."""
    teacher = _teacher(tmp_path, size="tiny-xs")
    t = load_model(teacher, FP32, CPU, tmp_path / "artifacts").model.eval()
    x = torch.randint(5, 600, (4, 16))

    def gap(model) -> float:
        with torch.no_grad():
            p = torch.log_softmax(t(input_ids=x).logits, -1)
            q = torch.log_softmax(model(input_ids=x).logits, -1)
        return float((p.exp() * (p - q)).sum(-1).mean())

    init_gap = gap(builtin.build("tiny-xs").eval())
    workload = create(
        _context(tmp_path, meter, _distill_case(teacher, alpha=1.0, steps=30, lr=3e-3))
    )
    workload.setup()
    for i in range(workload.planned_repetitions()):
        workload.run(i)
    assert gap(workload.loaded.model.eval()) < 0.7 * init_gap
    workload.teardown()


def test_distill_without_a_trained_teacher_fails_with_the_reason(tmp_path, meter):
    teacher = {"name": "teach", "source": "builtin:tiny-s", "trust_remote_code": False}
    workload = create(_context(tmp_path, meter, _distill_case(teacher)))
    with pytest.raises(HarnessError, match="teacher teach has no trained checkpoint"):
        workload.setup()


def test_finetune_starts_from_the_trained_source_and_saves_under_its_own_name(tmp_path, meter):
    source = _teacher(tmp_path, name="base", size="tiny-xs")
    start = load_model(source, FP32, CPU, tmp_path / "artifacts")
    start_state = {k: v.clone() for k, v in start.model.state_dict().items()}
    case = {
        "case_id": "f",
        "case": "base-ft/fp32/cpu/finetune-successor_mc",
        "suite": "test",
        "hardware": CPU,
        "model": {"name": "base-ft", "source": "builtin:tiny-xs"},
        "variant": FP32,
        "workload": {
            "type": "finetune",
            "from": "base",
            "from_model": source,
            "task": "successor_mc",
            "steps": 6,
            "batch_size": 4,
            "seq_len": 16,
        },
        "measurement": {"warmup": 0},
        "carbon": {},
    }
    workload = create(_context(tmp_path, meter, case))
    static = workload.setup()
    assert static["model"] == "base-ft" and static["finetuned_from"] == "base"
    assert static["task"] == "successor_mc"
    # it starts from the source's trained weights, not the seeded init
    for key, value in workload.loaded.model.state_dict().items():
        assert torch.equal(value, start_state[key]), key
    # and learns from the task's training questions ("after n comes n+1")
    text = workload.trainer.tokenizer.decode(workload.trainer.data[0][0])
    assert "comes" in text
    for i in range(workload.planned_repetitions()):
        workload.run(i)
    workload.teardown()
    tuned = load_model(
        {"name": "base-ft", "source": "builtin:tiny-xs"}, FP32, CPU, tmp_path / "artifacts"
    )
    assert tuned.trained is True
    changed = [k for k, v in tuned.model.state_dict().items() if not torch.equal(v, start_state[k])]
    assert changed and not math.isnan(float(next(tuned.model.parameters()).detach().sum()))
