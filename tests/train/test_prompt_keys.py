"""Prompt keys learned from task queries route each sample to its task, per sample."""

import numpy as np
import pytest

from brainvlm.train.prompt_keys import KeyRouter, learn_key, routing_accuracy


def clusters(seed: int, n: int = 40):
    rng = np.random.default_rng(seed)
    centres = {"abdomen": np.eye(8)[0] * 3, "chest": np.eye(8)[1] * 3, "head": np.eye(8)[2] * 3}
    return {task: centre + rng.standard_normal((n, 8)) for task, centre in centres.items()}


def test_a_learned_key_points_at_its_task():
    queries = clusters(0)["chest"]
    key = learn_key(queries, steps=200, seed=0)
    assert np.linalg.norm(key) == pytest.approx(1.0, abs=1e-5)
    assert int(np.argmax(np.abs(key))) == 1  # the chest direction


def test_routing_is_per_sample_among_the_tasks_seen_so_far():
    train, test = clusters(0), clusters(1)
    router = KeyRouter()
    router.add("abdomen", train["abdomen"])
    assert set(router.route(test["chest"])) == {"abdomen"}  # one task so far: everything goes there
    router.add("chest", train["chest"])
    router.add("head", train["head"])
    mixed = np.concatenate([test[t][:5] for t in ("head", "abdomen", "chest")])
    truth = ["head"] * 5 + ["abdomen"] * 5 + ["chest"] * 5
    assert routing_accuracy(router.route(mixed), truth) >= 0.9
    with pytest.raises(ValueError, match="already has a key"):
        router.add("chest", train["chest"])
