"""The training loop: learns digits, stops within one step of a cancel, reproducible, hooks."""

from __future__ import annotations

import math

import pytest
import torch

from accelvit.data import DataConfig, load_data
from accelvit.errors import Cancelled, ConfigError
from accelvit.models import build_model
from accelvit.train import TrainConfig, TrainHook, evaluate, fit, lr_factor
from accelvit.utils import CancelToken


class Recorder(TrainHook):
    def __init__(self):
        self.total = None
        self.steps: list[int] = []
        self.ended = False

    def on_fit_start(self, model, optimizer, total_steps):
        self.total = total_steps

    def on_after_step(self, model, step):
        self.steps.append(step)

    def on_fit_end(self, model):
        self.ended = True


@pytest.fixture(scope="module")
def digits16():
    return load_data(DataConfig(dataset="digits", img_size=16, batch_size=64))


def test_fit_learns_digits(digits16, digits_baseline):
    # Learning: the session's shared swin_micro (16 px, 8 epochs of this fit, conftest.digits_baseline)
    # reaches a real accuracy on the held-out test split. The app's default (32 px, 20 epochs) is measured
    # in the README.
    _model, data, top1, _ckpt = digits_baseline
    assert top1 >= 0.9, top1
    # The loop's bookkeeping, on a short run: hooks every step, history, progress, evaluation
    torch.manual_seed(0)
    model = build_model("swin_pico", 10)
    rec = Recorder()
    seen = []
    res = fit(model, digits16.train, TrainConfig(epochs=3, lr=3e-3, device="cpu"), val_loader=digits16.val,
              hooks=[rec], progress=seen.append)
    ev = evaluate(model, digits16.test, device="cpu")
    assert ev.top1 > 0.15, ev  # above chance (0.1) after 3 short epochs of a tiny model (seeded: 0.20)
    assert ev.top5 >= ev.top1 and ev.n == digits16.split["test"] and len(ev.per_class) == 10
    assert res.epochs == 3 and res.steps == rec.total == len(rec.steps) == 3 * len(digits16.train)
    assert rec.steps == list(range(1, res.steps + 1)) and rec.ended
    assert res.history[-1]["val_top1"] > 0.15
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert seen[-1].epoch_end and seen[-1].images_per_s > 0 and 0 < seen[-1].lr


def test_cancel_stops_within_one_step(digits16):
    model = build_model("swin_pico", 10)
    token = CancelToken()
    rec = Recorder()

    def progress(p):
        if p.global_step == 3:
            token.cancel()

    with pytest.raises(Cancelled):
        fit(model, digits16.train, TrainConfig(epochs=5, device="cpu"), hooks=[rec], progress=progress,
            cancel=token, progress_every=1)
    assert rec.steps == [1, 2, 3] and rec.ended


def test_same_seed_same_result():
    def run(seed):
        data = load_data(DataConfig(dataset="digits", img_size=16, batch_size=32, subset=128, seed=seed))
        torch.manual_seed(seed)
        model = build_model("swin_pico", 10)
        fit(model, data.train, TrainConfig(epochs=1, device="cpu", seed=seed))
        return model.state_dict()

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_lr_schedule_warmup_then_cosine():
    total, warm = 100, 0.1
    f = [lr_factor(s, total, warm, "cosine", 0.0) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(50, total, warm, "constant", 0.0) == 1.0


def test_evaluate_topk_and_per_class():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x

    logits = torch.tensor([[9.0, 1, 2, 3, 4, 5], [0.0, 9, 8, 7, 6, 5], [1.0, 2, 3, 4, 5, 9]])
    labels = torch.tensor([0, 2, 0])
    ev = evaluate(Fixed(), [(logits, labels)], device="cpu", num_classes=6)
    assert ev.top1 == pytest.approx(1 / 3) and ev.top5 == pytest.approx(2 / 3)
    assert ev.per_class[0] == pytest.approx(0.5) and ev.per_class[2] == 0.0 and math.isnan(ev.per_class[1])


@pytest.mark.parametrize("field,value", [("epochs", -1), ("lr", 0.0), ("schedule", "step"), ("warmup_frac", 1.0),
                                         ("device", "tpu")])
def test_bad_train_config_names_the_field(field, value):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**{field: value}).validate()
    assert e.value.field == field


def test_finetune_after_evaluating_with_a_device_move():
    """``predict_logits`` moves the model before inference mode: on a GPU the move makes new parameter
    tensors, and made inside ``torch.inference_mode`` they are inference tensors that the next finetune
    cannot save for backward. Reproduced on the CPU with a model whose ``.to`` casts (makes new tensors)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from accelvit.train import TrainConfig, evaluate, fit

    class Moves(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def to(self, *args, **kwargs):  # what a CPU -> CUDA move does: new parameter tensors
            self.lin.weight = torch.nn.Parameter(self.lin.weight.detach().double().float())
            self.lin.bias = torch.nn.Parameter(self.lin.bias.detach().double().float())
            return super().to(*args, **kwargs)

        def forward(self, x):
            return self.lin(x)

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(16, 4), torch.randint(0, 3, (16,)))
    loader = DataLoader(data, batch_size=8)
    model = Moves()
    evaluate(model, loader, device="cpu")
    assert not model.lin.weight.is_inference()
    fit(model, loader, TrainConfig(epochs=1, device="cpu", warmup_frac=0.0))  # raised before the fix
