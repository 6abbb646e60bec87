"""Training: exact resume, best-by-validation, stages, and torchrun data parallelism equal to one process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import traceback
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from brainvlm.core.paths import PARAMS_DIR, PROJECT_ROOT
from brainvlm.data.views import ViewConfig
from brainvlm.model import collate, loader, lora, tiny
from brainvlm.train import checkpoints, distributed, fit
from brainvlm.train import config as train_config
from brainvlm.train.checkpoints import load_tensors


def png_samples(root: Path, n: int = 24, seed: int = 0) -> list[dict]:
    """Two-image comparison samples whose label is the query image's brightness."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        label = "bright" if i % 2 else "dark"
        for kind, level in (("ref", 0.5), ("query", 0.8 if label == "bright" else 0.2)):
            pixels = np.clip(rng.normal(level, 0.05, (32, 32, 3)), 0, 1)
            Image.fromarray((pixels * 255).astype(np.uint8)).save(root / f"{kind}_{i}.png")
        samples.append({"id": f"s{i:03d}", "task": "comparison_categorical", "metadata": {"split": "train"},
                        "conversations": [
                            {"role": "user", "content": [{"type": "text", "text": "A reference scan."},
                                                         {"type": "image", "image_path": f"ref_{i}.png"}]},
                            {"role": "assistant", "content": [{"type": "text", "text": "Understood."}]},
                            {"role": "user", "content": [{"type": "text", "text": "Is this scan bright or dark?"},
                                                         {"type": "image", "image_path": f"query_{i}.png"}]},
                            {"role": "assistant", "content": [{"type": "text", "text": f"It is {label}."}]}]})
    return samples


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    samples = png_samples(root)
    base = tiny.build_tiny_model(tmp_path_factory.mktemp("base"), seed=0,
                                   vocab_texts=["It is bright.", "It is dark."])
    return root, samples, base


def fresh(setup):
    root, _, base = setup
    model, processor = loader.load(base)
    model = lora.add_lora(model, r=4, alpha=8, seed=0)
    config = collate.CollateConfig(image_root=root, view=ViewConfig(size=32))
    return model, collate.Collator(processor, config)


def run_fit(setup, out: Path, **kwargs):
    model, collator = fresh(setup)
    _, samples, _ = setup
    stages = [train_config.Stage("a", samples[:16], samples[16:], max_steps=4),
              train_config.Stage("b", samples[8:], samples[16:], max_steps=3, lr=5.0e-4)]
    config = train_config.TrainConfig(output_dir=str(out), batch_size=4, lr=2.0e-3, save_every=2, eval_every=2,
                                  progress=False)
    return model, fit.fit(model, collator, stages, config, **kwargs)


def assert_same_state(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= atol, f"max abs difference {worst}"


def test_interrupted_and_resumed_run_ends_with_the_same_weights(setup, tmp_path):
    model, result = run_fit(setup, tmp_path / "straight")
    with pytest.raises(fit.TrainingInterrupted):
        run_fit(setup, tmp_path / "crash", stop_after=5)  # dies in stage b, last checkpoint at step 4
    assert checkpoints.latest_checkpoint(tmp_path / "crash").name == "step-4"
    resumed_model, resumed = run_fit(setup, tmp_path / "crash", resume=True)
    assert resumed.steps == result.steps == 7
    assert_same_state(distributed.gather_trainable(model), distributed.gather_trainable(resumed_model))
    assert list(resumed.log["step"]) == list(range(1, 8))  # the log survives the crash too


def test_best_adapter_by_validation_loss_is_kept_and_loaded(setup, tmp_path):
    model, result = run_fit(setup, tmp_path / "run")
    val = result.log.dropna(subset=["val_loss"])
    assert len(val) >= 3 and result.best_val_loss == pytest.approx(val["val_loss"].min())
    saved = load_tensors(result.adapter_dir / "trainable.safetensors")
    assert_same_state(saved, distributed.gather_trainable(model), atol=0)
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert set(result.log["stage"]) == {"a", "b"} and result.log["lr"].iloc[-1] < 5.0e-4


def test_training_reduces_the_loss(setup, tmp_path):
    _, result = run_fit(setup, tmp_path / "run")
    assert result.log["loss"].iloc[-1] < result.log["loss"].iloc[0]
    assert result.samples == 7 * 4 and result.tokens > 0
    written = pd.read_csv(tmp_path / "run" / "batch_plan.csv")
    assert written["steps"].tolist() == result.plan["steps"].tolist() == [4, 3]
    assert (written["effective_batch"] == 4).all()


def test_too_little_data_for_one_batch_is_an_error(setup, tmp_path):
    model, collator = fresh(setup)
    _, samples, _ = setup
    config = train_config.TrainConfig(output_dir=str(tmp_path), batch_size=8, grad_accum=4, progress=False)
    with pytest.raises(ValueError, match="24 training samples is fewer than one global batch of 32"):
        fit.fit(model, collator, [train_config.Stage("a", samples)], config)


def test_gradient_accumulation_equals_the_larger_batch(setup, tmp_path):
    big, small = fresh(setup), fresh(setup)
    _, samples, _ = setup
    for (model, collator), (batch, accum) in ((big, (8, 1)), (small, (4, 2))):
        config = train_config.TrainConfig(output_dir=str(tmp_path / f"{batch}"), batch_size=batch, grad_accum=accum,
                                      progress=False)
        fit.fit(model, collator, [train_config.Stage("a", samples, max_steps=3)], config)
    assert_same_state(distributed.gather_trainable(big[0]), distributed.gather_trainable(small[0]), atol=1e-5)


TWO_PROCESSES = {
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    **{config: ["-m", "accelerate.commands.launch", "--config_file", str(PROJECT_ROOT / "configs" / "accelerate" /
                                                                        f"{config}.yaml")]
       for config in ("fsdp_zero3", "fsdp_zero2", "deepspeed_zero2", "deepspeed_zero3")},
}
EXPECTED_MODE = {"torchrun": "data_parallel", "fsdp_zero3": "fsdp", "fsdp_zero2": "fsdp",
                 "deepspeed_zero2": "deepspeed", "deepspeed_zero3": "deepspeed"}


def train_cli(ci_run: Path, params: dict, launcher: list[str], name: str, tmp_path: Path,
              group_outlives: bool = False) -> str:
    """Run ``python -m brainvlm train`` under a launcher; returns its stdout. Unless ``group_outlives`` (DeepSpeed,
    whose engines keep their groups), no thread of a process group may outlive its destruction."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(params))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, *launcher, "-m", "brainvlm", "train", "--params", str(path), "--task", "sex",
               "--run-dir", str(ci_run), "--name", name, "--no-progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert group_outlives or "threads of the process group still run" not in done.stderr, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def one_process_adapter(ci_run, tmp_path_factory) -> dict:
    """The adapter of one process at global batch 4 (3 steps, validation at the end)."""
    base = yaml.safe_load((PARAMS_DIR / "ci.yaml").read_text())
    params = {**base, "brain_max_steps": 3, "brain_epochs": 1.0, "brain_save_every": 0, "brain_eval_every": 0,
              "brain_batch_size": 4}
    train_cli(ci_run, params, [], "launch_single", tmp_path_factory.mktemp("single"))
    return load_tensors(ci_run / "models" / "launch_single" / "adapter" / "trainable.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", list(TWO_PROCESSES))
def test_two_processes_equal_one_process(launcher, ci_run, one_process_adapter, tmp_path):
    """``python -m brainvlm train`` on 2 CPU processes (gloo) = one process at the same global batch.

    torchrun replicates the model (gradients summed); the accelerate configs shard it (FSDP2 with and without
    resharding after forward, DeepSpeed ZeRO-2 and ZeRO-3). Each keeps the best adapter by validation loss.
    """
    base = yaml.safe_load((PARAMS_DIR / "ci.yaml").read_text())
    params = {**base, "brain_max_steps": 3, "brain_epochs": 1.0, "brain_save_every": 0, "brain_eval_every": 0,
              "brain_batch_size": 2}
    out = train_cli(ci_run, params, TWO_PROCESSES[launcher], f"launch_{launcher}", tmp_path,
                    group_outlives=EXPECTED_MODE[launcher] == "deepspeed")
    assert f"on 2 process(es) ({EXPECTED_MODE[launcher]})" in out
    state = load_tensors(ci_run / "models" / f"launch_{launcher}" / "adapter" / "trainable.safetensors")
    assert_same_state(one_process_adapter, state, atol=1e-5)
    settings = json.loads((ci_run / "models" / f"launch_{launcher}" / "settings.json").read_text())
    assert settings["batch_size"] == 2


def test_loss_over_kept_logits_equals_the_loss_over_full_logits(setup):
    """``token_loss_sum`` projects only answer-predicting positions; the sum equals full-logit cross-entropy."""
    model, collator = fresh(setup)
    _, samples, _ = setup
    batch = collator(samples[:5])  # lengths differ: padding and answers at different positions
    loss, n = fit.token_loss_sum(model, batch, "fp32")
    with torch.no_grad():
        logits = model(**collate.model_inputs(batch, torch.device("cpu"))).logits
    labels = batch["labels"][:, 1:]
    full = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=fit.IGNORE, reduction="sum")
    assert n == int((labels != fit.IGNORE).sum()) > 0
    assert loss.item() == pytest.approx(full.item(), rel=1e-5)


@pytest.mark.parametrize(("env", "expected"), [
    ({}, distributed.Sharding("data_parallel")),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_RESHARD_AFTER_FORWARD": "false"},
     distributed.Sharding("fsdp", reshard_after_forward=False)),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP"},
     distributed.Sharding("fsdp", reshard_after_forward=False)),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_OFFLOAD_PARAMS": "true"},
     distributed.Sharding("fsdp", reshard_after_forward=True, offload=True)),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
      "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "cpu"}, distributed.Sharding("deepspeed", zero_stage=3, offload=True)),
])
def test_sharding_follows_the_accelerate_config(env, expected):
    assert distributed.sharding_from("data_parallel", env) == expected


@pytest.mark.parametrize(("env", "message"), [
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "HYBRID_SHARD"}, "HYBRID_SHARD"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "1"}, "ZeRO stage must be 2 or 3"),
])
def test_unsupported_accelerate_settings_are_named(env, message):
    with pytest.raises(ValueError, match=message):
        distributed.sharding_from("data_parallel", env)


def test_fit_with_length_grouping_trains(setup, tmp_path):
    model, collator = fresh(setup)
    _, samples, _ = setup
    config = train_config.TrainConfig(output_dir=str(tmp_path), batch_size=4, lr=2.0e-3, progress=False,
                                  group_by_length=True)
    result = fit.fit(model, collator, [train_config.Stage("a", samples[:16], samples[16:], max_steps=4)], config)
    assert result.steps == 4 and (tmp_path / "adapter" / "trainable.safetensors").is_file()


def test_an_interrupted_fit_holds_nothing_past_the_end_of_its_process_group(monkeypatch):
    """The frames of an exception raised in ``process_group``'s block hold the model (and, sharded, the group
    through it): they are cleared before ``shutdown`` destroys the group, and the traceback still names them.
    The block also turns on ``faulthandler``, so a rank that aborts prints where its threads were."""
    held = []

    def train():
        model = torch.nn.Linear(2, 2)
        held.append(weakref.ref(model))
        raise fit.TrainingInterrupted("stopped after step 6 (stop_after)")

    alive_at_shutdown = []
    monkeypatch.setattr(distributed, "shutdown", lambda: alive_at_shutdown.append(held[0]() is not None))
    monkeypatch.setattr(distributed.faulthandler, "is_enabled", lambda: False)  # as in a new rank
    enabled = []
    monkeypatch.setattr(distributed.faulthandler, "enable", lambda: enabled.append(True))
    with pytest.raises(fit.TrainingInterrupted) as raised, distributed.process_group():
        train()
    assert alive_at_shutdown == [False]
    assert enabled == [True]  # a rank killed by a signal shows its threads' stacks
    assert "raise fit.TrainingInterrupted" in "".join(traceback.format_tb(raised.value.__traceback__))


def test_the_threads_of_a_process_group_are_seen_while_it_lives_and_end_with_it():
    """``group_threads`` names gloo's threads (so the sharded tests' check can fail), and a group nothing else
    holds takes them with it when destroyed."""
    import torch.distributed as dist

    before = distributed.group_threads()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        dist.all_reduce(torch.ones(2))
        during = distributed.group_threads()
    finally:
        dist.destroy_process_group()
    assert before == [] and distributed.group_threads() == []
    # a thread names itself when it first runs: a run loop has (it ran the all_reduce); the transport's loop
    # (gloo_tcp_loop), idle with one rank, may not have run yet on a busy machine
    assert "pt_gloo_runloop" in during


def test_threads_that_outlive_their_group_are_warned_of(monkeypatch):
    monkeypatch.setattr(distributed, "group_threads", lambda: ["gloo_tcp_loop", "pt_gloo_runloop"])
    with pytest.warns(RuntimeWarning, match=re.escape("2 threads of the process group still run after it was "
                                                      "destroyed (gloo_tcp_loop, pt_gloo_runloop)")):
        distributed.warn_of_group_threads()


SHARDED_ENV = {"fsdp": {"ACCELERATE_USE_FSDP": "true", "FSDP_RESHARD_AFTER_FORWARD": "true"},
               "deepspeed_zero3": {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}}


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(SHARDED_ENV))
def test_sharded_two_stage_fit_resumes_exactly_and_equals_one_process(mode, setup, tmp_path):
    """Two stages on 2 sharded CPU processes, interrupted in stage b and resumed, end with the adapter of an
    uninterrupted sharded run and of one process at the same global batch (4)."""
    root, samples, base = setup
    (tmp_path / "samples.json").write_text(json.dumps(samples))
    env = {**os.environ, **SHARDED_ENV[mode], "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    script = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              str(Path(__file__).with_name("fit_two_ranks.py")), "--base", str(base), "--images", str(root),
              "--samples", str(tmp_path / "samples.json")]

    def launch(out: str, *extra: str) -> str:
        done = subprocess.run([*script, "--out", str(tmp_path / out), *extra], env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        if mode == "fsdp":  # no thread of the group runs into interpreter exit, where it can abort the rank
            assert done.stdout.count("group threads after the block: []") == 2, done.stdout[-3000:]
            assert "threads of the process group still run" not in done.stderr, done.stderr[-3000:]
        return done.stdout

    straight_out = launch("straight")
    assert "interrupted" not in straight_out and "sharded: True" in straight_out
    assert "interrupted" in launch("resumed", "--stop-after", "6")  # in stage b, after its checkpoint
    assert (tmp_path / "resumed" / "checkpoints" / "step-6").is_dir()
    assert not (tmp_path / "resumed" / "adapter").exists()
    assert "interrupted" not in launch("resumed", "--resume")
    straight, resumed = (load_tensors(tmp_path / name / "adapter" / "trainable.safetensors")
                         for name in ("straight", "resumed"))
    assert_same_state(straight, resumed, atol=1e-6)
    _, single = run_fit(setup, tmp_path / "single")
    assert_same_state(load_tensors(single.adapter_dir / "trainable.safetensors"), straight, atol=1e-5)


# ---------------------------------------------------------------- loading never runs code from a file
class _Payload:
    """A pickle that would create a file when unpickled (what a crafted checkpoint file can do)."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ["BRAINVLM_PAYLOAD"]),))


@pytest.fixture(scope="module")
def crashed(setup, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("crashed")
    with pytest.raises(fit.TrainingInterrupted):
        run_fit(setup, folder, stop_after=3)
    return folder


@pytest.mark.parametrize("name, message", [
    ("optimizer.pt", ("optimizer.pt: refused: the file holds Python objects other than tensors and plain values, "
                      "and loading them could run code (a crafted or foreign file)")),
    ("scheduler.pt", "scheduler.pt: refused: the file holds Python objects other than tensors and plain values"),
    ("rng.json", "rng.json: not a random state brainvlm wrote (not UTF-8 text (invalid start byte at byte 0)"),
    ("trainable.safetensors", "trainable.safetensors: not a safetensors file ("),
])
def test_a_crafted_pickle_in_a_checkpoint_is_refused(setup, crashed, tmp_path, monkeypatch, name, message):
    import pickle
    import shutil

    work = tmp_path / "run"
    shutil.copytree(crashed, work)
    marker = tmp_path / "code_ran"
    monkeypatch.setenv("BRAINVLM_PAYLOAD", str(marker))
    checkpoint = checkpoints.latest_checkpoint(work)
    (checkpoint / name).write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(checkpoints.CheckpointError, match=re.escape(message)):
        run_fit(setup, work, resume=True)
    assert not marker.exists()  # nothing from the file ran


@pytest.mark.parametrize("text, message", [
    ("[]", ("state.json: the fit state is a JSON list, expected an object with ['best_val_loss', 'global_step', "
            "'log', 'samples', 'stage', 'stage_step', 'tokens']; the checkpoint is damaged or foreign: delete its "
            "folder to start over")),
    ('{"stage": "1", "steps": 3}', ("state.json: not a fit state brainvlm wrote (unknown keys ['steps'], values of "
                                     "the wrong type ['stage']); delete the checkpoint folder to start over")),
])
def test_a_fit_state_that_is_not_one_is_refused_naming_the_file(setup, crashed, tmp_path, text, message):
    import shutil

    work = tmp_path / "run"
    shutil.copytree(crashed, work)
    (checkpoints.latest_checkpoint(work) / "state.json").write_text(text)
    with pytest.raises(checkpoints.CheckpointError, match=re.escape(message)):
        run_fit(setup, work, resume=True)


def test_deepspeed_files_that_changed_since_they_were_written_are_refused(tmp_path):
    ds = tmp_path / "deepspeed" / "state"
    ds.mkdir(parents=True)
    (ds / "mp_rank_00_model_states.pt").write_bytes(b"written by the engine")
    checkpoints.record_deepspeed_hashes(tmp_path)
    checkpoints.verify_deepspeed_hashes(tmp_path)  # unchanged: accepted
    (ds / "mp_rank_00_model_states.pt").write_bytes(b"swapped by someone")
    with pytest.raises(checkpoints.CheckpointError, match=re.escape(
            "1 file(s) differ from when the checkpoint was written: ['state/mp_rank_00_model_states.pt']; "
            "refusing to unpickle them")):
        checkpoints.verify_deepspeed_hashes(tmp_path)
    (tmp_path / checkpoints.DEEPSPEED_HASHES).unlink()
    with pytest.raises(checkpoints.CheckpointError, match="no deepspeed.sha256.json"):
        checkpoints.verify_deepspeed_hashes(tmp_path)


def test_deepspeed_loads_its_cpu_communication_op_prebuilt():
    """The install (Makefile) compiles DeepSpeed's shared-memory op; else the first two-process run compiles it."""
    from deepspeed.git_version_info import installed_ops

    assert installed_ops.get("deepspeed_shm_comm"), ("DeepSpeed was installed without its CPU communication op: "
                                                     "reinstall it as the Makefile does (DS_BUILD_SHM_COMM=1)")
