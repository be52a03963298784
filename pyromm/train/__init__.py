"""Training: schedules, checkpoints, metrics logs, callbacks and the (multi-stage) trainer."""
from pyromm.train.callbacks import Callback, EarlyStopping, StepLog, TensorBoard, TrainerCallback
from pyromm.train.checkpoint import (
    CheckpointDir,
    CheckpointError,
    CheckpointMismatchError,
    load_checkpoint,
    model_signature,
    save_checkpoint,
)
from pyromm.train.logging import MetricsLog, read_jsonl
from pyromm.train.schedules import (
    Constant,
    Cosine,
    EpochWarmup,
    Exponential,
    Linear,
    Schedule,
    as_schedule,
    schedule_from_config,
)
from pyromm.train.trainer import Stage, Trainer

__all__ = [
    "Callback",
    "EarlyStopping",
    "StepLog",
    "TensorBoard",
    "TrainerCallback",
    "read_jsonl",
    "CheckpointDir",
    "CheckpointError",
    "CheckpointMismatchError",
    "Constant",
    "Cosine",
    "EpochWarmup",
    "Exponential",
    "Linear",
    "MetricsLog",
    "Schedule",
    "Stage",
    "Trainer",
    "as_schedule",
    "load_checkpoint",
    "model_signature",
    "save_checkpoint",
    "schedule_from_config",
]
