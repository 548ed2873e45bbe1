"""Data for training: character corpora (:mod:`.text`) and synthetic/CSV sequence tasks."""

from .errors import CorpusNotFoundError, DataError
from .tasks import (
    TASK_NAMES,
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
    "TemporalOrderTask",
    "get_task",
    "make_streams",
    "require_length",
    "stream_batches",
    "windows_per_epoch",
]
