"""The pruning configuration: one validated dataclass for heads, MLP width, SVD and IHT."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, reject_unknown

CRITERIA = ("taylor", "taylor_signed", "l1", "random")
#: The criteria that read calibration data.
DATA_CRITERIA = ("taylor", "taylor_signed")
RANKINGS = ("global", "uniform")
IHT_SCOPES = ("layer", "global")
#: ``unstructured``: any entries; ``2:4``: exactly 2 nonzeros in every group of 4 consecutive inputs of a row
#: (NVIDIA's semi-structured sparsity, which sparse tensor cores run about twice as fast on Ampere and newer).
IHT_PATTERNS = ("unstructured", "2:4")
TARGET_RULES = ("sensitivity", "uniform")
#: Names of the linear layers SVD / IHT may touch (the last part of the module path;
#: ``reduction`` is the patch-merging projection, ``head`` the classifier ``head.fc``).
LINEAR_KINDS = ("qkv", "proj", "fc1", "fc2", "reduction", "head")
DEFAULT_LINEARS = ("qkv", "proj", "fc1", "fc2")


@dataclass
class PruneConfig:
    """What to prune and how.

    Args:
        head_ratio: fraction of all attention heads to remove, in [0, 1).
        head_criterion: head importance: ``taylor`` (sum over calibration batches of
            |dL/d gate|), ``taylor_signed`` (the old |sum of dL/d gate|, an ablation), ``l1``
            (weight magnitude, data-free) or ``random`` (control).
        head_ranking: ``global`` (scores normalised per layer, ranked across the model or,
            with ``stage_head_ratios``, across each stage) or ``uniform`` (the same fraction
            from every layer). No layer ever loses its last head.
        stage_head_ratios: optional per-stage ratios overriding ``head_ratio``.
        mlp_ratio: fraction of MLP hidden units (fc1 rows / fc2 columns) to remove, in [0, 1).
        mlp_criterion: ``taylor``, ``l1`` or ``random``, as for heads.
        mlp_ranking: ``uniform`` (same fraction per block, default) or ``global``.
        rank_ratio: truncated SVD keeping this fraction of each layer's weights
            (r * (m + n) = rank_ratio * m * n); None disables SVD unless ``energy`` is set.
        energy: alternative to ``rank_ratio``: keep the smallest rank whose squared singular
            values reach this fraction of the total.
        activation_aware: factorise W S with S from the calibration inputs' second moment
            (Cholesky), minimising the output error instead of the weight error.
        svd_damping: relative diagonal damping added to the second moment before Cholesky.
        svd_layers: linear kinds eligible for SVD (subset of ``LINEAR_KINDS``).
        sparsity: final fraction of zero weights reached by IHT during finetuning, in [0, 1).
        iht_interval: optimizer steps between mask recomputations.
        iht_ramp_frac: fraction of the finetune steps over which the density ramps (cubic)
            from 1 to ``1 - sparsity``; masks are frozen afterwards, and the remaining steps
            (half of them by default) finetune the final sparse weights.
        iht_scope: ``layer`` (every layer reaches the target) or ``global`` (one threshold).
        iht_pattern: ``unstructured`` (any entries) or ``2:4`` (2 nonzeros in every group of 4 consecutive
            weights of a row, the pattern ``torch.sparse.to_sparse_semi_structured`` runs on NVIDIA sparse
            tensor cores; needs ``sparsity`` 0.5 and scope ``layer``; the ramp's intermediate masks are
            unstructured, the final one is 2:4; a layer whose input width is not a multiple of 4 stays unstructured).
        iht_layers: linear kinds IHT sparsifies (both factors of low-rank layers included).
        calib_batches: calibration batches used by ``taylor`` and activation-aware SVD.
        seed: seeds the ``random`` criterion.
        target_flops: instead of fixed ratios, reach this fraction of the model's dense FLOPs
            (within 1%): ``prune`` searches the head / MLP-width / rank ratios along the
            direction the ratios above give (all zero: heads and MLP width alike), see
            :mod:`accelvit.prune.flop_target`. None: use the ratios as given.
        target_rule: allocation rule of the FLOP-target search: ``sensitivity`` (default: heads
            and MLP units ranked across all layers by loss score per FLOP they cost) or ``uniform``
            (the same fractions in every layer).
        prune_steps: reach the target in this many prune steps, with a short (distilled)
            recovery finetune between them, inside the finetune's epoch budget (1: one-shot).
    """

    head_ratio: float = 0.0
    head_criterion: str = "taylor"
    head_ranking: str = "global"
    stage_head_ratios: list[float] | None = None
    mlp_ratio: float = 0.0
    mlp_criterion: str = "taylor"
    mlp_ranking: str = "uniform"
    rank_ratio: float | None = None
    energy: float | None = None
    activation_aware: bool = False
    svd_damping: float = 0.01
    svd_layers: tuple[str, ...] = DEFAULT_LINEARS
    sparsity: float = 0.0
    iht_interval: int = 16
    iht_ramp_frac: float = 0.5
    iht_scope: str = "layer"
    iht_pattern: str = "unstructured"
    iht_layers: tuple[str, ...] = DEFAULT_LINEARS
    calib_batches: int = 8
    seed: int = 0
    target_flops: float | None = None
    target_rule: str = "sensitivity"
    prune_steps: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.svd_layers, (list, str)):
            self.svd_layers = (self.svd_layers,) if isinstance(self.svd_layers, str) else tuple(self.svd_layers)
        if isinstance(self.iht_layers, (list, str)):
            self.iht_layers = (self.iht_layers,) if isinstance(self.iht_layers, str) else tuple(self.iht_layers)
        if isinstance(self.stage_head_ratios, tuple):
            self.stage_head_ratios = list(self.stage_head_ratios)

    # ----------------------------------------------------------------- validation
    def validate(self) -> "PruneConfig":
        _ratio("head_ratio", self.head_ratio)
        _choice("head_criterion", self.head_criterion, CRITERIA)
        _choice("head_ranking", self.head_ranking, RANKINGS)
        if self.stage_head_ratios is not None:
            if not isinstance(self.stage_head_ratios, list) or not self.stage_head_ratios:
                raise ConfigError("stage_head_ratios", "must be a non-empty list of ratios (one per stage) or None.")
            for i, r in enumerate(self.stage_head_ratios):
                _ratio(f"stage_head_ratios[{i}]", r)
        _ratio("mlp_ratio", self.mlp_ratio)
        _choice("mlp_criterion", self.mlp_criterion, CRITERIA)
        _choice("mlp_ranking", self.mlp_ranking, RANKINGS)
        if self.rank_ratio is not None and self.energy is not None:
            raise ConfigError("energy", "give either rank_ratio or energy, not both.")
        if self.rank_ratio is not None:
            if not _is_number(self.rank_ratio) or not 0 < self.rank_ratio <= 1:
                raise ConfigError("rank_ratio", f"must be in (0, 1] (fraction of each layer's weights kept), "
                                                f"got {self.rank_ratio!r}; use None to disable SVD.")
        if self.energy is not None:
            if not _is_number(self.energy) or not 0 < self.energy <= 1:
                raise ConfigError("energy", f"must be in (0, 1] (fraction of squared singular values kept), "
                                            f"got {self.energy!r}; use None to disable.")
        if not isinstance(self.activation_aware, bool):
            raise ConfigError("activation_aware", f"must be true or false, got {self.activation_aware!r}.")
        if self.activation_aware and not self.svd_enabled:
            raise ConfigError("activation_aware", "needs SVD: set rank_ratio or energy as well.")
        if not _is_number(self.svd_damping) or not 0 <= self.svd_damping < 1:
            raise ConfigError("svd_damping", f"must be in [0, 1), got {self.svd_damping!r}.")
        _kinds("svd_layers", self.svd_layers)
        if self.svd_enabled and not self.svd_layers:
            raise ConfigError("svd_layers", f"SVD is enabled but no layer kind is eligible; choose from {LINEAR_KINDS}.")
        _ratio("sparsity", self.sparsity)
        if not isinstance(self.iht_interval, int) or isinstance(self.iht_interval, bool) or self.iht_interval < 1:
            raise ConfigError("iht_interval", f"must be a whole number >= 1 (optimizer steps), got {self.iht_interval!r}.")
        if not _is_number(self.iht_ramp_frac) or not 0 <= self.iht_ramp_frac <= 1:
            raise ConfigError("iht_ramp_frac", f"must be in [0, 1], got {self.iht_ramp_frac!r}.")
        _choice("iht_scope", self.iht_scope, IHT_SCOPES)
        _choice("iht_pattern", self.iht_pattern, IHT_PATTERNS)
        if self.iht_pattern == "2:4":
            if self.sparsity != 0.5:
                raise ConfigError("iht_pattern", f"2:4 keeps exactly 2 of every 4 weights, so sparsity must be 0.5, "
                                                 f"got {self.sparsity!r}.")
            if self.iht_scope != "layer":
                raise ConfigError("iht_pattern", "2:4 is a per-row pattern; it needs iht_scope 'layer'.")
        _kinds("iht_layers", self.iht_layers)
        if self.sparsity > 0 and not self.iht_layers:
            raise ConfigError("sparsity", f"sparsity {self.sparsity} was asked for but iht_layers is empty, so no "
                                          f"layer is eligible; choose iht_layers from {LINEAR_KINDS}.")
        if not isinstance(self.calib_batches, int) or isinstance(self.calib_batches, bool) or self.calib_batches < 1:
            raise ConfigError("calib_batches", f"must be a whole number >= 1, got {self.calib_batches!r}.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError("seed", f"must be a whole number, got {self.seed!r}.")
        if self.target_flops is not None:
            if not _is_number(self.target_flops) or not 0 < self.target_flops < 1:
                raise ConfigError("target_flops", f"must be a fraction of the baseline's dense FLOPs in (0, 1), "
                                                  f"got {self.target_flops!r}; use None for fixed ratios.")
            if self.energy is not None:
                raise ConfigError("target_flops", "cannot be combined with energy (the search sets the SVD rank "
                                                  "ratio); give rank_ratio, or nothing, as the direction.")
        _choice("target_rule", self.target_rule, TARGET_RULES)
        if not isinstance(self.prune_steps, int) or isinstance(self.prune_steps, bool) or not 1 <= self.prune_steps <= 20:
            raise ConfigError("prune_steps", f"must be a whole number in [1, 20], got {self.prune_steps!r}.")
        if self.prune_steps > 1 and self.target_flops is None:
            raise ConfigError("prune_steps", "gradual pruning steps toward a FLOP target: set target_flops too.")
        return self

    # ----------------------------------------------------------------- helpers
    @property
    def svd_enabled(self) -> bool:
        return self.rank_ratio is not None or self.energy is not None

    @property
    def prunes_heads(self) -> bool:
        return self.head_ratio > 0 or any(r > 0 for r in (self.stage_head_ratios or []))

    @property
    def prunes_structure(self) -> bool:
        """Whether the ratios as given remove heads or MLP units or factorise layers."""
        return self.prunes_heads or self.mlp_ratio > 0 or self.svd_enabled

    @property
    def needs_calibration(self) -> bool:
        """Whether ``prune`` reads the calibration loader."""
        if self.target_flops is not None:  # the search may set any ratio
            return self.criteria_need_calibration
        return self.ratios_need_calibration

    @property
    def criteria_need_calibration(self) -> bool:
        """Whether some criterion reads calibration data once its ratio is above zero."""
        return (self.head_criterion in DATA_CRITERIA or self.mlp_criterion in DATA_CRITERIA or self.activation_aware)

    @property
    def ratios_need_calibration(self) -> bool:
        """Whether pruning by the ratios as given (``target_flops`` aside) reads calibration data."""
        return ((self.prunes_heads and self.head_criterion in DATA_CRITERIA)
                or (self.mlp_ratio > 0 and self.mlp_criterion in DATA_CRITERIA)
                or (self.svd_enabled and self.activation_aware))

    def is_noop(self) -> bool:
        """True when neither ``prune`` nor finetuning IHT would change anything."""
        return not self.prunes_structure and self.sparsity == 0 and self.target_flops is None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["svd_layers"] = list(self.svd_layers)
        d["iht_layers"] = list(self.iht_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PruneConfig":
        if not isinstance(d, dict):
            raise ConfigError("prune", f"expected a mapping of prune settings, got {type(d).__name__}.")
        reject_unknown(d, cls, what="prune setting")
        return cls(**d).validate()


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _ratio(field: str, x: Any) -> None:
    if not _is_number(x) or not 0 <= x < 1:
        raise ConfigError(field, f"must be a number in [0, 1) (the fraction removed), got {x!r}.")


def _choice(field: str, x: Any, options: tuple[str, ...]) -> None:
    if x not in options:
        raise ConfigError(field, f"unknown value {x!r}; use one of {list(options)}.")


def _kinds(field: str, kinds: Any) -> None:
    if not isinstance(kinds, tuple) or not all(isinstance(k, str) for k in kinds):
        raise ConfigError(field, f"must be a list of layer kinds from {list(LINEAR_KINDS)}, got {kinds!r}.")
    bad = [k for k in kinds if k not in LINEAR_KINDS]
    if bad:
        raise ConfigError(field, f"unknown layer kind(s) {bad}; use names from {list(LINEAR_KINDS)}.")
