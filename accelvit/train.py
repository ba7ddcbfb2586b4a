"""One training loop for baseline training and finetuning, and one evaluation loop.

``fit`` runs AdamW with a warmup + cosine (or constant) learning-rate schedule, label
smoothing, gradient clipping and bf16 autocast on CUDA. It is seeded and reproducible on
the CPU, checks a cancel token every step, reports progress through a callback, and calls
per-step hooks (IHT plugs in there) after every optimizer step.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from . import distributed as D
from .errors import ConfigError, TrainingError
from .utils import CancelToken, check_cancel, resolve_device, seed_everything

log = logging.getLogger(__name__)

SCHEDULES = ("cosine", "constant")
#: ``loss_fn(logits, labels, images) -> scalar loss`` of :func:`fit`.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainConfig:
    """Hyper-parameters of one ``fit``.

    Args:
        epochs: passes over the training loader (0 is allowed and does nothing).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay (not applied to biases, norms, position tables).
        warmup_frac: fraction of all steps spent ramping the lr linearly from ~0 to ``lr``.
        schedule: ``cosine`` (decay to ``min_lr_ratio * lr``) or ``constant`` after warmup.
        min_lr_ratio: final lr as a fraction of ``lr`` for the cosine schedule.
        label_smoothing: cross-entropy label smoothing.
        grad_clip: max gradient norm; 0 or None disables clipping.
        amp: autocast on CUDA: bf16 where the GPU supports it, else fp16 with loss scaling (ignored elsewhere).
        device: ``auto`` (cuda, then mps, then cpu), or a torch device string.
        seed: seeds weights-independent randomness (shuffling, augmentation, dropout).
        max_steps: stop after this many optimizer steps in total (None: no limit).
    """

    epochs: int = 10
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.1
    schedule: str = "cosine"
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.1
    grad_clip: float | None = 1.0
    amp: bool = True
    device: str = "auto"
    seed: int = 0
    max_steps: int | None = None

    def validate(self) -> "TrainConfig":
        for name in ("lr", "weight_decay", "warmup_frac", "min_lr_ratio", "label_smoothing"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
                raise ConfigError(name, f"must be a finite number, got {v!r}.")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float))
                                               and not isinstance(self.grad_clip, bool)
                                               and math.isfinite(self.grad_clip)):
            raise ConfigError("grad_clip", f"must be a finite number >= 0 or None, got {self.grad_clip!r}.")
        for name in ("epochs", "max_steps"):
            v = getattr(self, name)
            if (v is not None or name != "max_steps") and (not isinstance(v, int) or isinstance(v, bool)):
                raise ConfigError(name, f"must be a whole number, got {v!r}.")
        if not isinstance(self.amp, bool):
            raise ConfigError("amp", f"must be true or false, got {self.amp!r}.")
        if self.epochs < 0:
            raise ConfigError("epochs", f"must be a whole number >= 0, got {self.epochs!r}.")
        if not self.lr > 0:
            raise ConfigError("lr", f"must be a positive number, got {self.lr!r}.")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay!r}.")
        if not 0 <= self.warmup_frac < 1:
            raise ConfigError("warmup_frac", f"must be in [0, 1), got {self.warmup_frac!r}.")
        if self.schedule not in SCHEDULES:
            raise ConfigError("schedule", f"unknown schedule {self.schedule!r}; use one of {SCHEDULES}.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio!r}.")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError("label_smoothing", f"must be in [0, 1), got {self.label_smoothing!r}.")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ConfigError("grad_clip", f"must be >= 0 or None, got {self.grad_clip!r}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("max_steps", f"must be >= 1 or None, got {self.max_steps!r}.")
        resolve_device(self.device)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainHook:
    """Base class of per-step hooks. Override what you need; every method is optional.

    ``on_fit_start`` is called once before the first step with the optimizer and the total
    number of optimizer steps; ``on_before_step`` after every ``backward()`` (before clipping
    and stepping: where masked gradients are zeroed); ``on_after_step`` after every
    ``optimizer.step()`` with the 1-based global step; ``on_fit_end`` once after the last step (also when cancelled).
    """

    def on_fit_start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        pass

    def on_before_step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        """After ``backward()``, before gradient clipping and ``optimizer.step()`` (``step`` is 1-based)."""

    def on_after_step(self, model: torch.nn.Module, step: int) -> None:
        pass

    def on_fit_end(self, model: torch.nn.Module) -> None:
        pass


@dataclass
class TrainProgress:
    """One progress report of ``fit`` (sent every ``progress_every`` steps and at epoch ends)."""

    epoch: int            # 1-based
    epochs: int
    step: int             # 1-based step within the epoch
    steps_per_epoch: int
    global_step: int
    total_steps: int
    loss: float           # running mean over the epoch so far
    lr: float
    accuracy: float       # running top-1 on training batches this epoch
    images_per_s: float
    elapsed_s: float
    epoch_end: bool = False
    val_top1: float | None = None

    @property
    def fraction(self) -> float:
        return self.global_step / max(1, self.total_steps)


@dataclass
class FitResult:
    epochs: int
    steps: int
    train_seconds: float
    images_per_s: float
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EvalResult:
    top1: float
    top5: float
    loss: float
    n: int
    per_class: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or "relative_position_bias_table" in name or "pos_embed" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, total_steps: int, warmup_frac: float, schedule: str, min_lr_ratio: float) -> float:
    """Multiplier of the peak lr at 0-based ``step`` of ``total_steps``."""
    warmup = int(round(warmup_frac * total_steps))
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def nonfinite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``model`` holding a NaN or an infinity (empty: all finite)."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    return [n for n, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_finite(model: torch.nn.Module, what: str = "The model",
                 advice: str = "it was not saved. Train it again with a lower learning rate.") -> None:
    """TrainingError when a weight of ``model`` is NaN or infinite: such a model must not be saved or reused."""
    bad = nonfinite_tensors(model)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise TrainingError(f"{what} has weights that are not finite numbers (NaN or infinity) in "
                            f"{', '.join(bad[:3])}{more}; {advice}")


def _diverged(value: float, global_step: int, steps_per_epoch: int, total_steps: int, config: TrainConfig
              ) -> TrainingError:
    """The error of a non-finite loss at 1-based ``global_step``, naming where and at which learning rate."""
    epoch, step = (global_step - 1) // steps_per_epoch + 1, (global_step - 1) % steps_per_epoch + 1
    lr = config.lr * lr_factor(global_step - 1, total_steps, config.warmup_frac, config.schedule,
                               config.min_lr_ratio)
    return TrainingError(
        f"Training diverged: the loss became {value} at epoch {epoch}, step {step} of {steps_per_epoch} "
        f"(step {global_step} of {total_steps} in all), with the learning rate at {lr:.3g} (peak lr "
        f"{config.lr:.3g}). The weights are no longer usable, so the run stops here and nothing is saved; "
        f"try a lower learning rate (e.g. {config.lr / 10:.3g})"
        + ("." if config.grad_clip else " and gradient clipping (grad_clip 1.0)."))


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype of ``fit``/``evaluate`` on ``device``: bf16 on a CUDA device that supports it,
    else fp16 (``fit`` then scales the loss with a GradScaler); None (fp32) off CUDA or with ``amp`` off."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device, amp: bool):
    dtype = amp_dtype(device, amp)
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def fit(model: torch.nn.Module, train_loader: DataLoader, config: TrainConfig, *,
        val_loader: DataLoader | None = None, hooks: Sequence[TrainHook] = (),
        progress: Callable[[TrainProgress], None] | None = None, cancel: CancelToken | None = None,
        progress_every: int = 10, loss_fn: LossFn | None = None) -> FitResult:
    """Train ``model`` in place. Raises :class:`~accelvit.errors.Cancelled` within one step of a cancel.

    A loss that is not a finite number (NaN, infinity: the training diverged) raises
    :class:`~accelvit.errors.TrainingError` naming the epoch, the step and the learning rate, and so do
    weights that end up non-finite: a diverged model never leaves ``fit`` as if it were trained. On the CPU
    the loss is checked before each backward pass; on an accelerator it is checked without stalling the
    queue, when progress is reported (every ``progress_every`` steps) and at the end, naming the first bad step.

    The model is left on the configured device. Reproducible on the CPU for a given seed when
    the loader is seeded (``accelvit.data`` loaders are): the loader's own shuffling generator is
    reset to ``config.seed`` too, so a finetune sees the same batches whether or not the same
    loader trained a baseline before (a cached baseline must not change the result).
    """
    config.validate()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    gen = getattr(train_loader, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(config.seed)
    model.to(device)
    net: torch.nn.Module = model  # what the batches go through: the model, or its DDP wrapper under torchrun
    if D.active():
        if not isinstance(getattr(train_loader, "sampler", None), DistributedSampler):
            train_loader = D.shard_train_loader(train_loader, config.seed)
        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    result = FitResult(epochs=0, steps=0, train_seconds=0.0, images_per_s=0.0)
    if total_steps == 0:
        return result
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, config.warmup_frac, config.schedule, config.min_lr_ratio))
    # fp16 autocast (a GPU without bf16) needs loss scaling; bf16 and fp32 do not (the scaler is then a no-op)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype(device, config.amp) == torch.float16)
    for h in hooks:
        h.on_fit_start(model, optimizer, total_steps)
    start = time.perf_counter()
    images = 0
    global_step = 0
    sync_check = device.type == "cpu"  # a CPU loss is already there; elsewhere .item() would stall the queue
    first_bad = torch.zeros((), device=device, dtype=torch.long)  # 1-based step of the first non-finite loss
    bad_loss = torch.zeros((), device=device)

    def raise_if_diverged() -> None:
        g = int(first_bad)
        if g:
            raise _diverged(float(bad_loss), g, steps_per_epoch, total_steps, config)

    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            D.set_epoch(train_loader, epoch)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            for step, (x, y) in enumerate(train_loader, start=1):
                # under torchrun a cancel reaches rank 0 only: every rank stops at the same step (a check of rank
                # 0's token alone would leave the others waiting in the next collective); alone, a plain check
                D.check_cancel_all(cancel, f"training epoch {epoch}, step {step}")
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                with _autocast(device, config.amp):
                    logits = net(x)
                    if loss_fn is None:
                        loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
                    else:
                        loss = loss_fn(logits.float(), y, x)
                lv = loss.detach()
                if sync_check:
                    if not math.isfinite(float(lv)):
                        raise _diverged(float(lv), global_step + 1, steps_per_epoch, total_steps, config)
                else:
                    fresh = (first_bad == 0) & ~torch.isfinite(lv)
                    first_bad = torch.where(fresh, global_step + 1, first_bad)
                    bad_loss = torch.where(fresh, lv.float(), bad_loss)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)  # hooks (IHT) and clipping see the true gradients
                for h in hooks:
                    h.on_before_step(model, optimizer, global_step + 1)
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)  # skips the step when fp16 gradients overflowed
                scaler.update()
                scheduler.step()
                global_step += 1
                for h in hooks:
                    h.on_after_step(model, global_step)
                bs = y.shape[0]
                loss_sum += loss.detach() * bs
                correct += (logits.detach().argmax(1) == y).sum()
                seen += bs
                images += bs * (D.world_size() if net is not model else 1)  # every rank trains a shard alike
                last = step == steps_per_epoch or global_step == total_steps
                if not sync_check and (step % progress_every == 0 or last):
                    raise_if_diverged()
                if progress is not None and (step % progress_every == 0 or last):
                    elapsed = time.perf_counter() - start
                    progress(TrainProgress(
                        epoch=epoch, epochs=config.epochs, step=step, steps_per_epoch=steps_per_epoch,
                        global_step=global_step, total_steps=total_steps, loss=float(loss_sum) / seen,
                        lr=optimizer.param_groups[0]["lr"], accuracy=float(correct) / seen,
                        images_per_s=images / max(elapsed, 1e-9), elapsed_s=elapsed))
                if global_step >= total_steps:
                    break
            if net is not model:  # the epoch's training loss and accuracy over every rank's batches
                tot = D.all_reduce_sum(torch.stack([loss_sum.float(), correct.float(),
                                                    torch.tensor(float(seen), device=device)]))
                loss_sum, correct, seen = tot[0], tot[1], int(tot[2])
            record: dict[str, Any] = {"epoch": epoch, "train_loss": float(loss_sum) / max(seen, 1),
                                      "train_acc": float(correct) / max(seen, 1),
                                      "lr": optimizer.param_groups[0]["lr"],
                                      "seconds": time.perf_counter() - start}
            if val_loader is not None:
                ev = evaluate(model, val_loader, device=device, amp=config.amp, cancel=cancel)
                record.update(val_top1=ev.top1, val_top5=ev.top5, val_loss=ev.loss)
            result.history.append(record)
            result.epochs = epoch
            if progress is not None:
                elapsed = time.perf_counter() - start
                progress(TrainProgress(
                    epoch=epoch, epochs=config.epochs, step=steps_per_epoch, steps_per_epoch=steps_per_epoch,
                    global_step=global_step, total_steps=total_steps, loss=record["train_loss"],
                    lr=record["lr"], accuracy=record["train_acc"], images_per_s=images / max(elapsed, 1e-9),
                    elapsed_s=elapsed, epoch_end=True, val_top1=record.get("val_top1")))
            if global_step >= total_steps:
                break
    finally:
        for h in hooks:
            h.on_fit_end(model)
        result.steps = global_step
        result.train_seconds = time.perf_counter() - start
        result.images_per_s = images / max(result.train_seconds, 1e-9)
    raise_if_diverged()
    check_finite(model, f"After {global_step} training steps (peak lr {config.lr:.3g}), the model")
    model.eval()
    return result


def predict_logits(model: torch.nn.Module, loader: Iterable, device: str | torch.device = "auto",
                   amp: bool = True, cancel: CancelToken | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All logits (float32, CPU) and labels of a loader.

    The model is moved to the device *before* inference mode starts: a parameter moved (or cast)
    inside ``torch.inference_mode`` becomes an inference tensor, and the next finetune of that model
    would fail with "Inference tensors cannot be saved for backward".
    """
    dev = resolve_device(device)
    model.to(dev).eval()
    outs, labels = [], []
    with torch.inference_mode():
        for x, y in loader:
            check_cancel(cancel, "evaluation")
            with _autocast(dev, amp):
                outs.append(model(x.to(dev, non_blocking=True)).float().cpu())
            labels.append(y.cpu())
    if not outs:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(labels)


def evaluate(model: torch.nn.Module, loader: Iterable, device: str | torch.device = "auto",
             num_classes: int | None = None, amp: bool = True, cancel: CancelToken | None = None) -> EvalResult:
    """Top-1 / top-5 accuracy (fractions in [0, 1]), mean cross-entropy and per-class accuracy."""
    was_training = model.training
    model = getattr(model, "module", model) if isinstance(model, DDP) else model
    if D.active() and isinstance(loader, DataLoader):
        # each rank predicts its own disjoint slice; every rank then holds all logits, so the metrics are
        # exactly those of one process (no padded duplicates, identical on every rank)
        # (the slices may differ by a batch, so a cancel is checked once, by every rank, after the gather)
        logits, y = predict_logits(model, D.shard_eval_loader(loader), device=device, amp=amp)
        parts = [None] * D.world_size()
        torch.distributed.all_gather_object(parts, (logits, y))
        D.check_cancel_all(cancel, "evaluation")
        logits = torch.cat([p[0] for p in parts if p[0].numel()]) if any(p[0].numel() for p in parts) else logits
        y = torch.cat([p[1] for p in parts])
    else:
        logits, y = predict_logits(model, loader, device=device, amp=amp, cancel=cancel)
    if was_training:
        model.train()
    n = int(y.numel())
    if n == 0:
        return EvalResult(top1=float("nan"), top5=float("nan"), loss=float("nan"), n=0, per_class=[])
    c = logits.shape[1]
    k = min(5, c)
    topk = logits.topk(k, dim=1).indices
    top1 = float((topk[:, 0] == y).float().mean())
    top5 = float((topk == y[:, None]).any(1).float().mean())
    loss = float(F.cross_entropy(logits, y))
    num_classes = num_classes or c
    per_class = []
    pred = topk[:, 0]
    for cls in range(num_classes):
        sel = y == cls
        per_class.append(float((pred[sel] == cls).float().mean()) if sel.any() else float("nan"))
    return EvalResult(top1=top1, top5=top5, loss=loss, n=n, per_class=per_class)
