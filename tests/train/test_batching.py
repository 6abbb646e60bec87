"""Which samples make each step: length grouping, the epoch order of a stage, the effective-batch report."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from brainvlm.train import batching
from brainvlm.train import config as train_config


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 500), min_size=0, max_size=120), batch_size=st.integers(1, 9),
       megabatch=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_length_grouped_batches_partition_every_index(lengths, batch_size, megabatch, seed):
    batches = batching.length_grouped_batches(lengths, batch_size, seed, megabatch)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert sum(len(b) < batch_size for b in batches) <= 1 and all(0 < len(b) <= batch_size for b in batches)
    assert batches == batching.length_grouped_batches(lengths, batch_size, seed, megabatch)


def test_length_grouping_cuts_padding():
    lengths = np.random.default_rng(0).integers(20, 400, size=256).tolist()
    grouped = batching.length_grouped_batches(lengths, 8, seed=0)
    order = np.random.default_rng(0).permutation(256).tolist()
    plain = [order[i:i + 8] for i in range(0, 256, 8)]

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(grouped) < 0.2 * padding(plain)
    assert grouped != batching.length_grouped_batches(lengths, 8, seed=1)


def test_length_grouped_steps_cover_every_sample_once_per_epoch_with_less_padding():
    lengths = [100 + 40 * (i % 2) + i % 3 for i in range(64)]
    stage = train_config.Stage("a", [{"id": str(i)} for i in range(64)], max_steps=16)
    grouped = [batching.step_indices(stage, step, 8, seed=3, lengths=lengths) for step in range(8)]
    plain = [batching.step_indices(stage, step, 8, seed=3) for step in range(8)]
    for order in (grouped, plain):
        assert sorted(i for batch in order for i in batch) == list(range(64))

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(grouped) < padding(plain) / 4
    assert grouped == [batching.step_indices(stage, step, 8, seed=3, lengths=lengths) for step in range(8)]
    assert grouped != [batching.step_indices(stage, 8 + step, 8, seed=3, lengths=lengths) for step in range(8)]


def test_batch_plan_reports_the_effective_batch_and_what_each_epoch_leaves_out():
    samples = [{"id": str(i)} for i in range(50)]
    stages = [train_config.Stage("a", samples, epochs=2.0), train_config.Stage("b", samples[:20], max_steps=5)]
    config = train_config.TrainConfig(output_dir="unused", batch_size=4, grad_accum=2)
    plan = batching.batch_plan(stages, config, processes=2).set_index("stage")
    assert plan.loc["a", "effective_batch"] == plan.loc["b", "effective_batch"] == 16
    assert plan.loc["a", ["steps", "epochs", "dropped_per_epoch"]].tolist() == [6, 2.0, 2]
    assert plan.loc["b", ["steps", "epochs", "dropped_per_epoch"]].tolist() == [5, 5.0, 4]
    assert batching.global_batch_size(config, 3) == 24
