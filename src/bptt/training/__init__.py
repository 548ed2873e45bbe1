"""Training: one configuration, data sources behind one interface, the loop, evaluation.

config       :mod:`.config`: :class:`TrainConfig`, every ``bptt train`` option as a field
sources      :mod:`.sources`: :class:`DataSource`, which only serves data (a batch and whether
             it starts new streams): character streams and sequence tasks, each owning its state
loop         :mod:`.loop`: :class:`Trainer` (``algorithm.gradient(*source.next_batch())`` with
             the :mod:`bptt.algorithms` entry ``--algorithm`` names; steps, clipping, the
             optimizer, checkpoints, logs, early stopping, resume), :class:`TrainEvent`,
             :class:`TrainResult`
evaluation   :mod:`.evaluation`: held-out metrics of a text or a task
fitting      :mod:`.fitting`: :func:`fit`, your own arrays on the same trainer
plots        :mod:`.plots`: the learning curves of a run (``loss.png``)

from bptt.training import TrainConfig, Trainer
result = Trainer(TrainConfig(out="runs/char", steps=100)).train()
"""

from .config import TrainConfig, config_fields
from .evaluation import evaluate_task, evaluate_text
from .fitting import fit
from .loop import Callback, Trainer, TrainEvent, TrainingDiverged, TrainResult
from .sources import CharStreamSource, DataSource, TaskSource, make_source, make_task

__all__ = [
    "Callback",
    "CharStreamSource",
    "DataSource",
    "TaskSource",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "config_fields",
    "evaluate_task",
    "evaluate_text",
    "fit",
    "make_source",
    "make_task",
]
