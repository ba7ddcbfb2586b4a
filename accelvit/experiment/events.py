"""What a running experiment tells the world: stage, progress, metrics, warning, error and artifact events.

Each event is a dataclass with a ``kind`` and ``to_dict()``; the runner hands them to its
``on_event`` callback (the job runner stores them in the run store, the CLI logs them).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from ..errors import AccelvitError

#: The stages of a run, in order (``control`` only when the config asks for it).
STAGES = ("data", "baseline", "before", "prune", "pruned", "finetune", "after", "control", "save")


@dataclass
class Event:
    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = self.kind
        return d


@dataclass
class StageStarted(Event):
    kind: ClassVar[str] = "stage_started"
    stage: str
    index: int            # 0-based position among the stages this run executes
    total: int            # number of stages this run executes
    overall: float = 0.0  # overall fraction of the run done when the stage starts
    ts: float = field(default_factory=time.time)


@dataclass
class StageFinished(Event):
    kind: ClassVar[str] = "stage_finished"
    stage: str
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)  # e.g. baseline source, fit summary, prune report
    overall: float = 0.0
    ts: float = field(default_factory=time.time)


@dataclass
class Progress(Event):
    kind: ClassVar[str] = "progress"
    stage: str
    fraction: float                 # of this stage, in [0, 1]
    overall: float                  # of the whole run, in [0, 1]
    epoch: int | None = None        # 1-based
    epochs: int | None = None
    step: int | None = None         # 1-based step within the epoch
    steps: int | None = None        # steps per epoch
    global_step: int | None = None
    total_steps: int | None = None
    loss: float | None = None       # running mean training loss of the epoch
    accuracy: float | None = None   # running training top-1 of the epoch, in [0, 1]
    val_top1: float | None = None   # at epoch ends when a validation split exists
    lr: float | None = None
    images_per_s: float | None = None
    eta_s: float | None = None      # of this stage
    message: str | None = None
    ts: float = field(default_factory=time.time)


@dataclass
class Metrics(Event):
    kind: ClassVar[str] = "metrics"
    stage: str
    metrics: dict[str, Any]  # top1, top5, loss, n, per_class + everything accelvit.metrics.measure reports
    ts: float = field(default_factory=time.time)


@dataclass
class WarningEvent(Event):
    kind: ClassVar[str] = "warning"
    message: str
    stage: str | None = None
    ts: float = field(default_factory=time.time)


@dataclass
class ErrorEvent(Event):
    kind: ClassVar[str] = "error"
    message: str
    stage: str | None = None
    error_type: str = ""
    traceback: str = ""
    ts: float = field(default_factory=time.time)


@dataclass
class Artifact(Event):
    kind: ClassVar[str] = "artifact"
    name: str            # "model", "report", "baseline", ...
    path: str
    type: str = "file"   # "model" (a serialize.save directory), "json", "csv", "file"
    stage: str | None = None
    ts: float = field(default_factory=time.time)


EventCallback = Callable[[Event], None]


def describe_error(exc: BaseException) -> str:
    """The message shown to the user: ours as they are, anything else with its type."""
    if isinstance(exc, AccelvitError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"

