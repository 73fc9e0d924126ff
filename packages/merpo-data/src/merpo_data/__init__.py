"""merpo-data: offline meta-RL datasets (Minari format) for the merpo environments.

- :func:`generate` trains per-task SAC behavior policies and writes Minari datasets
  ``merpo/<env>/task-<NN>-<quality>-v0`` for the qualities :data:`QUALITIES`.
- :func:`load_dataset` returns a dataset, building it when missing.
- :class:`TaskSampler` loads tasks' transitions onto a device and samples ``(T, B, ...)`` batches
  (and, for other methods, contexts and whole episodes as :class:`SequenceBatch`).
- :func:`ensure_datasets`: the datasets of many (task, quality) pairs are local, else one
  line naming every missing one and the one ``merpo-data generate`` that builds them all.
- :class:`DamagedDatasetError`: a damaged local dataset, one line naming the fix.
"""

from merpo_data.datasets import generate, load_dataset
from merpo_data.ids import QUALITIES, dataset_id, parse_dataset_id, parse_qualities, parse_tasks
from merpo_data.integrity import DamagedDatasetError
from merpo_data.sampler import SequenceBatch, TaskSampler, TransitionBatch, ensure_datasets

__all__ = [
    "QUALITIES",
    "DamagedDatasetError",
    "SequenceBatch",
    "TaskSampler",
    "TransitionBatch",
    "dataset_id",
    "ensure_datasets",
    "generate",
    "load_dataset",
    "parse_dataset_id",
    "parse_qualities",
    "parse_tasks",
]
