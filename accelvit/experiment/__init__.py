"""One experiment, one runner: config -> stages -> events (used by the dashboard, the CLI and bench).

- :mod:`.config`: :class:`ExperimentConfig`, :class:`SweepConfig`, ``default_finetune()``
- :mod:`.events`: the event dataclasses a run emits, ``STAGES``
- :mod:`.baselines`: the shared baseline cache (``<home>/baselines/<key>/``)
- :mod:`.runner`: :class:`Experiment`, the stage loop with its seams
- :mod:`.estimate`: the cost preview of the Experiment form
"""

from .config import FINETUNE_DEFAULTS, ExperimentConfig, SweepConfig, default_finetune
from .events import (STAGES, Artifact, ErrorEvent, Event, EventCallback, Metrics, Progress, StageFinished,
                     StageStarted, WarningEvent, describe_error)
from .runner import Experiment, ExperimentResult

__all__ = ["STAGES", "Artifact", "ErrorEvent", "Event", "EventCallback", "Experiment", "ExperimentConfig",
           "ExperimentResult", "FINETUNE_DEFAULTS", "Metrics", "Progress", "StageFinished", "StageStarted",
           "SweepConfig", "WarningEvent", "default_finetune", "describe_error"]
