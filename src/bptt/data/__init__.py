"""Data for training: character corpora (:mod:`.text`) and synthetic/CSV sequence tasks."""

from .errors import CorpusNotFoundError, DataError
from .registry import TASK_NAMES, TaskSpec, register
from .tasks import (
    TASKS,
    AddingTask,
    Batch,
    CopyTask,
    CsvTask,
    LaggedDependenciesTask,
    SequenceTask,
    SineTask,
    TemporalOrderTask,
    get_task,
)
from .text import (
    CharCorpus,
    CharVocab,
    make_streams,
    require_length,
    stream_batches,
    windows_per_epoch,
)

__all__ = [
    "TASKS",
    "TASK_NAMES",
    "AddingTask",
    "Batch",
    "CharCorpus",
    "CharVocab",
    "CopyTask",
    "CorpusNotFoundError",
    "CsvTask",
    "DataError",
    "LaggedDependenciesTask",
    "SequenceTask",
    "SineTask",
    "TaskSpec",
    "TemporalOrderTask",
    "get_task",
    "make_streams",
    "register",
    "require_length",
    "stream_batches",
    "windows_per_epoch",
]
