"""Describe and re-apply the structural changes pruning made (placeholder until pruning lands)."""

from __future__ import annotations

from typing import Any

import torch


def describe_structure(model: torch.nn.Module) -> dict[str, Any]:
    return {}


def apply_structure(model: torch.nn.Module, structure: dict[str, Any]) -> None:
    if structure:
        raise NotImplementedError("pruned structures are not supported yet")
