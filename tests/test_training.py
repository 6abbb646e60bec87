"""Training: exact resume, best-by-validation, stages, and torchrun data parallelism equal to one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from brainvlm import collate, models, training
from brainvlm.paths import PARAMS_DIR, PROJECT_ROOT
from brainvlm.volumes import ViewConfig


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
    base = models.build_tiny_model(tmp_path_factory.mktemp("base"), seed=0,
                                   vocab_texts=["It is bright.", "It is dark."])
    return root, samples, base


def fresh(setup):
    root, samples, base = setup
    model, processor = models.load(base)
    model = models.add_lora(model, r=4, alpha=8, seed=0)
    config = collate.CollateConfig(image_root=root, view=ViewConfig(size=32))
    return model, collate.Collator(processor, config)


def run_fit(setup, out: Path, **kwargs):
    model, collator = fresh(setup)
    _, samples, _ = setup
    stages = [training.Stage("a", samples[:16], samples[16:], max_steps=4),
              training.Stage("b", samples[8:], samples[16:], max_steps=3, lr=5.0e-4)]
    config = training.TrainConfig(output_dir=str(out), batch_size=4, lr=2.0e-3, save_every=2, eval_every=2,
                                  progress=False)
    return model, training.fit(model, collator, stages, config, **kwargs)


def assert_same_state(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= atol, f"max abs difference {worst}"


def test_interrupted_and_resumed_run_ends_with_the_same_weights(setup, tmp_path):
    model, result = run_fit(setup, tmp_path / "straight")
    with pytest.raises(training.TrainingInterrupted):
        run_fit(setup, tmp_path / "crash", stop_after=5)  # dies in stage b, last checkpoint at step 4
    assert training.latest_checkpoint(tmp_path / "crash").name == "step-4"
    resumed_model, resumed = run_fit(setup, tmp_path / "crash", resume=True)
    assert resumed.steps == result.steps == 7
    assert_same_state(training.trainable_state(model), training.trainable_state(resumed_model))
    assert list(resumed.log["step"]) == list(range(1, 8))  # the log survives the crash too


def test_best_adapter_by_validation_loss_is_kept_and_loaded(setup, tmp_path):
    model, result = run_fit(setup, tmp_path / "run")
    val = result.log.dropna(subset=["val_loss"])
    assert len(val) >= 3 and result.best_val_loss == pytest.approx(val["val_loss"].min())
    saved = torch.load(result.adapter_dir / "trainable.pt", weights_only=True)
    assert_same_state(saved, training.trainable_state(model), atol=0)
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert set(result.log["stage"]) == {"a", "b"} and result.log["lr"].iloc[-1] < 5.0e-4


def test_training_reduces_the_loss(setup, tmp_path):
    _, result = run_fit(setup, tmp_path / "run")
    assert result.log["loss"].iloc[-1] < result.log["loss"].iloc[0]
    assert result.samples == 7 * 4 and result.tokens > 0


def test_too_little_data_for_one_batch_is_an_error(setup, tmp_path):
    model, collator = fresh(setup)
    _, samples, _ = setup
    config = training.TrainConfig(output_dir=str(tmp_path), batch_size=8, grad_accum=4, progress=False)
    with pytest.raises(ValueError, match="24 training samples is fewer than one global batch of 32"):
        training.fit(model, collator, [training.Stage("a", samples)], config)


def test_gradient_accumulation_equals_the_larger_batch(setup, tmp_path):
    big, small = fresh(setup), fresh(setup)
    _, samples, _ = setup
    for (model, collator), (batch, accum) in ((big, (8, 1)), (small, (4, 2))):
        config = training.TrainConfig(output_dir=str(tmp_path / f"{batch}"), batch_size=batch, grad_accum=accum,
                                      progress=False)
        training.fit(model, collator, [training.Stage("a", samples, max_steps=3)], config)
    assert_same_state(training.trainable_state(big[0]), training.trainable_state(small[0]), atol=1e-5)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(ci_run, tmp_path):
    """``python -m brainvlm train`` under torchrun (gloo, 2 ranks) = one process at the same global batch."""
    base = yaml.safe_load((PARAMS_DIR / "ci.yaml").read_text())
    common = {"max_steps": 3, "epochs": 1.0, "save_every": 0, "eval_every": 0}
    runs = {"single": ({**base, **common, "batch_size": 4}, [sys.executable]),
            "ddp": ({**base, **common, "batch_size": 2},
                    [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"])}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    for name, (params, launcher) in runs.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(params))
        command = launcher + ["-m", "brainvlm", "train", "--params", str(path), "--task", "sex",
                              "--run-dir", str(ci_run), "--name", f"torchrun_{name}", "--no-progress"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    states = [torch.load(ci_run / "models" / f"torchrun_{n}" / "adapter" / "trainable.pt", weights_only=True)
              for n in runs]
    assert_same_state(*states, atol=1e-5)
    logs = [json.loads((ci_run / "models" / f"torchrun_{n}" / "settings.json").read_text()) for n in runs]
    assert [s["batch_size"] for s in logs] == [4, 2]
