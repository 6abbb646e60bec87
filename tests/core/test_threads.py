"""Thread counts follow the cores a process may use, or what the user gave."""

from __future__ import annotations

import os

import pytest

from brainvlm.core import threads


@pytest.fixture
def no_thread_env(monkeypatch):
    for name in (*threads.THREAD_VARIABLES, "GOMP_SPINCOUNT", "TOKENIZERS_PARALLELISM"):
        monkeypatch.delenv(name, raising=False)


def test_requested_beats_environment_beats_available_cores(no_thread_env, monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 7)
    assert threads.choose_threads() == 7
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads() == 3
    assert threads.choose_threads(5) == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert threads.choose_threads() == 7


@pytest.mark.parametrize(("files", "cores"), [
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_cgroup_quota_in_cores(tmp_path, files, cores):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert threads.cgroup_cpu_limit(tmp_path) == cores


def test_available_cores_is_the_affinity_capped_by_the_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.5)
    assert threads.available_cores() == 2
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 0.5)
    assert threads.available_cores() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.available_cores() == 4


def test_use_threads_sets_torch_and_short_waits(no_thread_env):
    import torch

    before = torch.get_num_threads()
    try:
        assert threads.use_threads(1) == 1
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["GOMP_SPINCOUNT"] == threads.SPIN_COUNT
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    finally:
        torch.set_num_threads(before)


def test_set_seed_uses_the_chosen_threads(no_thread_env, monkeypatch):
    import torch

    from brainvlm.core.seeding import set_seed

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        set_seed(0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
