"""Which samples make each optimizer step: the epoch order (shuffled, or grouped by length), the steps a
stage gives, and the effective batch (per-process batch x accumulation x processes).

The order of an epoch is fixed by ``(seed, epoch)``, so a resumed run can skip straight to its step, and
every process computes the same global batch and takes its own slice of it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainvlm.train.config import Stage, TrainConfig
from brainvlm.train.distributed import world


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, megabatch: int = 50) -> list[list[int]]:
    """Batches of indices with similar lengths, in a seeded random order.

    Indices are shuffled, cut into megabatches of ``batch_size * megabatch``, sorted by length inside
    each (longest first, ties by index), cut into batches, and the batches shuffled. Every index appears
    once; only the last batch of the last megabatch can be short.
    """
    if batch_size < 1 or megabatch < 1:
        raise ValueError(f"batch_size={batch_size}, megabatch={megabatch}: both must be >= 1")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    size = batch_size * megabatch
    batches = []
    for start in range(0, len(order), size):
        chunk = sorted(order[start:start + size].tolist(), key=lambda i: (-lengths[i], i))
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    return [batches[k] for k in rng.permutation(len(batches)).tolist()]


def batch_order(n_samples: int, seed: int, epoch: int, lengths: list[int] | None = None,
                global_batch: int = 1) -> list[int]:
    """The sample order of one epoch, fixed by (seed, epoch) so resuming can skip to a step.

    With ``lengths``, samples of similar length are next to each other (``length_grouped_batches``
    over global batches), so batches carry less padding.
    """
    if lengths is None:
        return np.random.default_rng([seed, epoch]).permutation(n_samples).tolist()
    shuffle_seed = int(np.random.default_rng([seed, epoch]).integers(2 ** 31))
    batches = length_grouped_batches(lengths, global_batch, seed=shuffle_seed)
    return [i for batch in batches for i in batch]


def sample_lengths(collator, samples: list[dict], progress: bool = False) -> list[int]:
    """Token count of each sample as the collator encodes it (0 when dropped for length); fills its cache."""
    return [0 if item is None else int(item["input_ids"].numel())
            for item in (collator.encode(s) for s in tqdm(samples, desc="token lengths", disable=not progress))]


def stage_steps(stage: Stage, global_batch: int) -> int:
    """Optimizer steps in a stage (incomplete final batches are dropped so every step has the same size)."""
    per_epoch = len(stage.train) // global_batch
    if per_epoch == 0:
        raise ValueError(f"stage '{stage.name}': {len(stage.train)} training samples is fewer than one "
                         f"global batch of {global_batch}; lower batch_size or grad_accum")
    return stage.max_steps if stage.max_steps is not None else max(1, math.ceil(stage.epochs * per_epoch))


def global_batch_size(config: TrainConfig, processes: int | None = None) -> int:
    """Samples per optimizer step: per-process batch x accumulation x processes."""
    return config.batch_size * config.grad_accum * (world()[1] if processes is None else processes)


def batch_plan(stages: list[Stage], config: TrainConfig, processes: int | None = None) -> pd.DataFrame:
    """The effective-batch report: per stage, how the global batch is made and how many steps it gives.

    ``dropped_per_epoch`` counts the samples left out of each epoch's incomplete final batch (a different
    set every epoch, since the order is reshuffled).
    """
    processes = world()[1] if processes is None else processes
    size = global_batch_size(config, processes)
    rows = []
    for stage in stages:
        steps, per_epoch = stage_steps(stage, size), len(stage.train) // size
        rows.append({"stage": stage.name, "batch_per_process": config.batch_size, "grad_accum": config.grad_accum,
                     "processes": processes, "effective_batch": size, "train_samples": len(stage.train),
                     "steps": steps, "epochs": round(steps / per_epoch, 2),
                     "dropped_per_epoch": len(stage.train) - per_epoch * size})
    return pd.DataFrame(rows)


def step_indices(stage: Stage, step: int, global_batch: int, seed: int,
                 lengths: list[int] | None = None) -> list[int]:
    """Sample indices of the global batch at ``step`` of a stage (length-grouped when ``lengths`` is given)."""
    per_epoch = len(stage.train) // global_batch
    epoch, within = divmod(step, per_epoch)
    order = batch_order(len(stage.train), seed, epoch, lengths, global_batch)
    return order[within * global_batch:(within + 1) * global_batch]
