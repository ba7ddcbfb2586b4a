"""accelvit: make Swin vision transformers smaller and faster by pruning, and measure honestly.

The small public API (imported lazily so ``import accelvit`` stays cheap)::

    build_model(name, num_classes, pretrained=False, weights_path=None, img_size=None)
    load_data(DataConfig(...)) -> DataBundle
    prune(model, PruneConfig(...), calib_loader) -> (model, PruneReport)
    measure(model, input_size=None, device="cpu") -> Measurement
    save(model, path, class_names=None, meta=None) / load(path) -> (model, spec)
    Experiment(ExperimentConfig(...)).run() -> ExperimentResult   (the whole pipeline, as the
        dashboard, ``accelvit run`` / ``prune`` and ``bench.pareto`` run it)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "build_model": "accelvit.models",
    "DataConfig": "accelvit.data",
    "load_data": "accelvit.data",
    "TrainConfig": "accelvit.train",
    "fit": "accelvit.train",
    "evaluate": "accelvit.train",
    "PruneConfig": "accelvit.prune",
    "prune": "accelvit.prune",
    "measure": "accelvit.metrics",
    "save": "accelvit.serialize",
    "load": "accelvit.serialize",
    "Experiment": "accelvit.experiment",
    "ExperimentConfig": "accelvit.experiment",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'accelvit' has no attribute {name!r}")
