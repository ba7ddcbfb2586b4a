"""Knowledge distillation for the finetune after pruning: the unpruned baseline is the teacher.

Logit distillation (Hinton et al. 2015)::

    loss = (1 - alpha) * CE(student, labels; label smoothing)
           + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

``KL`` is averaged over the batch (``batchmean``); ``T^2`` keeps the soft term's gradient on
the scale of the hard one. :class:`DistillLoss` plugs into :func:`accelvit.train.fit` as its
``loss_fn``; the teacher runs in eval + inference mode on the same (augmented) images as the
student and never gets a gradient. Call :meth:`DistillLoss.close` (or use ``with``) to free it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConfigError


@dataclass
class DistillConfig:
    """How the finetune after pruning learns from the unpruned baseline.

    Args:
        alpha: weight of the distillation term in [0, 1]; 0 switches distillation off
            (plain label loss), 1 learns from the teacher only.
        temperature: softmax temperature T (> 0) of both teacher and student in the KL term.
    """

    alpha: float = 0.7
    temperature: float = 2.0

    @property
    def enabled(self) -> bool:
        return self.alpha > 0

    def validate(self) -> "DistillConfig":
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise ConfigError("alpha", f"must be in [0, 1] (0 switches distillation off), got {self.alpha!r}.")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ConfigError("temperature", f"must be a positive number such as 2, got {t!r}.")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, alpha: float, temperature: float,
            label_smoothing: float = 0.0) -> torch.Tensor:
    """``(1 - alpha) * CE + alpha * T^2 * KL(teacher_T || student_T)`` (batch mean), float32."""
    student = student.float()
    hard = F.cross_entropy(student, labels, label_smoothing=label_smoothing)
    if alpha <= 0:
        return hard
    t = float(temperature)
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher.float() / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    return (1 - alpha) * hard + alpha * soft


class DistillLoss:
    """``fit``'s ``loss_fn``: the teacher's logits on the same images, mixed with the labels by ``kd_loss``."""

    def __init__(self, teacher: nn.Module, config: DistillConfig, label_smoothing: float = 0.0):
        self.teacher: nn.Module | None = teacher.eval()  # no gradient reaches it: it runs in inference mode
        self.config = config.validate()
        self.label_smoothing = float(label_smoothing)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if self.teacher is None:
            raise RuntimeError("DistillLoss was closed; its teacher is gone.")
        self.teacher.to(images.device)  # outside inference mode: its parameters stay normal tensors
        with torch.inference_mode():
            t_logits = self.teacher(images).float()
        return kd_loss(logits, t_logits.clone(), labels, self.config.alpha, self.config.temperature,
                       self.label_smoothing)

    def close(self) -> None:
        """Drop the teacher (its memory is freed once nothing else holds it)."""
        self.teacher = None

    def __enter__(self) -> "DistillLoss":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
