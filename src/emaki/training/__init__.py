"""One training loop for everything emaki trains (DESIGN.md, engine layer).

from emaki.training import EMA, TrainingLoop, parse_lr_schedule
rates = parse_lr_schedule("5e-3:100, 1e-3:1000, 1e-5")        # A1111's learning-rate string
optimizer = torch.optim.AdamW(model.parameters(), lr=rates.base_lr)
loop = TrainingLoop(loss=lambda i: loss_of_batch(i), optimizer=optimizer, total=rates.steps(2000),
                    schedule=rates, ema=EMA(model.parameters(), 0.999),
                    checkpoint_dir=Path("run"), checkpoint_every=500, resume=True, rngs=[generator])
result = loop.run(progress=lambda p: print(p.step, p.loss, p.lr), cancel=threading.Event())
"""

from emaki.training.checkpoint import STATE_FILE, load_checkpoint, save_checkpoint
from emaki.training.ema import EMA
from emaki.training.errors import (
    CheckpointError,
    LRScheduleError,
    NonFiniteLossError,
    TrainingError,
)
from emaki.training.loop import ProgressCallback, TrainingLoop, TrainingProgress, TrainingResult
from emaki.training.schedules import (
    LRSchedule,
    RateSchedule,
    constant,
    cosine,
    linear_decay,
    parse_lr_schedule,
    warmup,
)

__all__ = [
    "EMA",
    "STATE_FILE",
    "CheckpointError",
    "LRSchedule",
    "LRScheduleError",
    "NonFiniteLossError",
    "ProgressCallback",
    "RateSchedule",
    "TrainingError",
    "TrainingLoop",
    "TrainingProgress",
    "TrainingResult",
    "constant",
    "cosine",
    "linear_decay",
    "load_checkpoint",
    "parse_lr_schedule",
    "save_checkpoint",
    "warmup",
]
