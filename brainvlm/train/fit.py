"""LoRA fine-tuning over one or more stages, with checkpoints, exact resume and several processes.

The same ``fit`` runs in a notebook, from ``python -m brainvlm train`` and under ``torchrun`` or
``accelerate launch``. Every rank takes its slice of each global batch and the loss is the sum over label
tokens divided by the global token count, so a run on N processes computes the same gradient as one
process with the same global batch (up to float order), whether the model is replicated (data parallel)
or sharded (FSDP2, DeepSpeed ZeRO-2/3): see ``brainvlm.train.distributed``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from brainvlm.train.batching import batch_plan, global_batch_size, sample_lengths, stage_steps, step_indices
from brainvlm.train.checkpoints import (
    RNG,
    STATE,
    TRAINABLE,
    latest_checkpoint,
    load_fit_state,
    load_optimizer,
    load_rng,
    load_trainable,
    prune_checkpoints,
    save_adapter,
    save_checkpoint,
    set_rng_state,
)
from brainvlm.train.config import Stage, TrainConfig
from brainvlm.train.distributed import (
    Sharding,
    Stepper,
    all_reduce_sum,
    barrier,
    is_sharded,
    rank_slices,
    shard_model,
    sharding_from,
    world,
)

logger = logging.getLogger(__name__)
IGNORE = -100


def lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at a step: linear warmup, then the schedule."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        if schedule == "constant":
            return 1.0
        raise ValueError(f"schedule must be cosine, linear or constant, got {schedule!r}")
    return factor


def token_loss_sum(model, batch: dict[str, Any], precision: str) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the label tokens of a batch, and how many label tokens there were.

    Logits are computed only at the positions that predict a label token (``logits_to_keep`` as a boolean
    mask): prompt and image tokens, most of a sequence, never go through the vocabulary projection. The
    loss equals the one over full logits; the time and memory saved grow with the vocabulary (152k for Qwen2).
    """
    from brainvlm.model.collate import model_inputs

    device = next(p.device for p in model.parameters())
    inputs = model_inputs(batch, device)
    targets = batch["labels"][:, 1:].to(device)
    keep = torch.nn.functional.pad(targets != IGNORE, (0, 1), value=False)
    with autocast(precision, device):
        logits = model(**inputs, logits_to_keep=keep).logits
    loss = torch.nn.functional.cross_entropy(logits.float(), targets[targets != IGNORE], reduction="sum")
    return loss, int(keep.sum())


def autocast(precision: str, device: torch.device):
    """Mixed-precision context for bf16/fp16; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


class TrainingInterrupted(RuntimeError):
    """Raised by ``stop_after`` to simulate a crash (tests of exact resume)."""


@dataclass
class FitResult:
    """What a fit leaves behind."""

    adapter_dir: Path
    log: pd.DataFrame
    best_val_loss: float | None
    steps: int
    seconds: float
    samples: int
    tokens: int
    plan: pd.DataFrame = field(default_factory=pd.DataFrame)  # batch_plan: the effective batch per stage

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else float("nan")

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def evaluate_loss(model, collator, samples: list[dict], batch_size: int, precision: str) -> float:
    """Token-mean loss over a sample list (sharded across ranks).

    Every rank runs the same number of forwards (a sharded model gathers its layers collectively): a rank
    with fewer samples repeats its first batch and leaves it out of the sum.
    """
    rank, size = world()
    mine = samples[rank::size]
    n_batches = math.ceil(math.ceil(len(samples) / size) / batch_size) if size > 1 else 0
    starts = list(range(0, len(mine), batch_size))
    total, tokens = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for k in range(max(len(starts), n_batches)):
            counted = k < len(starts)
            batch = collator(mine[starts[k]:starts[k] + batch_size] if counted else mine[:batch_size] or samples[:1])
            if batch is None:
                continue
            loss, n = token_loss_sum(model, batch, precision)
            if counted:
                total, tokens = total + float(loss), tokens + n
    model.train(was_training)
    total, tokens = all_reduce_sum(total), all_reduce_sum(tokens)
    return total / tokens if tokens else float("nan")


@dataclass
class _Run:
    """Mutable state of one fit, saved in every checkpoint."""

    stage: int = 0
    stage_step: int = 0
    global_step: int = 0
    best_val_loss: float | None = None
    samples: int = 0
    tokens: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)


RUN_TYPES = {"stage": (int,), "stage_step": (int,), "global_step": (int,), "best_val_loss": (int, float, type(None)),
             "samples": (int,), "tokens": (int,), "log": (list,)}  # what state.json may hold (see _Run)


def train_step(model, collator, stage: Stage, step: int, config: TrainConfig, seed: int,
               stepper: Stepper, lengths: list[int] | None = None) -> dict[str, float]:
    """One optimizer step's forward/backward over this rank's micro-batches; returns loss and counts."""
    size = world()[1]
    indices = step_indices(stage, step, global_batch_size(config, size), seed, lengths)
    batches = [collator([stage.train[i] for i in part]) for part in rank_slices(indices, config.batch_size,
                                                                                config.grad_accum)]
    if size > 1 and stepper.sharding.mode != "data_parallel" and any(b is None for b in batches):
        raise RuntimeError(f"stage '{stage.name}' step {step}: every sample of a micro-batch was dropped for "
                           f"length; with {stepper.sharding.mode} every rank must run each forward: raise max_length")
    batches = [b for b in batches if b is not None]
    local_tokens = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
    global_tokens = all_reduce_sum(local_tokens)
    if global_tokens == 0:
        raise RuntimeError(f"stage '{stage.name}' step {step}: no assistant tokens in the batch; "
                           f"check the chat template's generation markers")
    loss_sum = 0.0
    for batch in batches:
        loss, _ = token_loss_sum(stepper.forward_model, batch, config.precision)
        stepper.backward(loss / global_tokens)
        loss_sum += float(loss.detach())
    stepper.step()
    samples = all_reduce_sum(sum(len(b["input_ids"]) for b in batches))
    return {"loss": all_reduce_sum(loss_sum) / global_tokens, "tokens": global_tokens, "samples": samples}


def run_stage(model, collator, stage: Stage, config: TrainConfig, state: _Run,
              resume_from: Path | None, stop_after: int | None, sharding: Sharding) -> None:
    """Train one stage from ``state.stage_step`` to its end, evaluating and checkpointing on the way."""
    output = Path(config.output_dir)
    total = stage_steps(stage, global_batch_size(config))
    stepper = Stepper(model, stage.lr or config.lr, config.weight_decay,
                      lr_lambda(config.schedule, int(config.warmup_ratio * total), total), sharding,
                      config.batch_size, config.grad_accum, config.max_grad_norm)
    if resume_from is not None:
        load_optimizer(stepper, resume_from)
    seed = config.seed + 1000 * state.stage
    lengths = sample_lengths(collator, stage.train, config.progress) if config.group_by_length else None
    if world()[0] == 0:
        logger.info("stage %s: steps %d-%d of this fit (%s), %d training samples, peak lr %g",
                    stage.name, state.global_step - state.stage_step + 1, state.global_step - state.stage_step + total,
                    f"resuming after step {state.global_step}" if state.stage_step else "starting",
                    len(stage.train), stage.lr or config.lr)
    bar = tqdm(total=total, initial=state.stage_step, desc=f"stage {stage.name}",
               disable=not config.progress or world()[0] != 0)
    model.train()
    while state.stage_step < total:
        start = time.perf_counter()
        lr = stepper.lr()
        out = train_step(model, collator, stage, state.stage_step, config, seed, stepper, lengths)
        state.stage_step += 1
        state.global_step += 1
        state.samples += int(out["samples"])
        state.tokens += int(out["tokens"])
        row = {"stage": stage.name, "step": state.global_step, "stage_step": state.stage_step, "lr": lr,
               "loss": out["loss"], "val_loss": None, "seconds": time.perf_counter() - start}
        last = state.stage_step == total
        if stage.val and ((config.eval_every and state.stage_step % config.eval_every == 0) or last):
            row["val_loss"] = evaluate_loss(stepper.forward_model, collator, stage.val, config.batch_size,
                                            config.precision)
            if state.best_val_loss is None or row["val_loss"] < state.best_val_loss:
                state.best_val_loss = row["val_loss"]
                save_adapter(model, output / "best")
        state.log.append(row)
        bar.set_postfix(loss=f"{out['loss']:.3f}", refresh=False)  # a redraw per step costs 0.6 ms in a notebook
        bar.update(1)  # redraws at most every 0.1 s
        if (config.save_every and state.stage_step % config.save_every == 0) or last:
            save_checkpoint(output / "checkpoints" / f"step-{state.global_step}", model, stepper, asdict(state))
            prune_checkpoints(output, config.keep_checkpoints)
            barrier()
        if stop_after is not None and state.global_step >= stop_after:
            bar.close()
            raise TrainingInterrupted(f"stopped after step {state.global_step} (stop_after)")
    bar.close()


def fit(model, collator, stages: list[Stage], config: TrainConfig, resume: bool = False,
        stop_after: int | None = None) -> FitResult:
    """Train ``model`` (already wrapped with LoRA) over the stages; keep the best adapter by val loss.

    Args:
        collator: callable turning a list of canonical samples into a batch (``brainvlm.model.collate.Collator``).
        stages: run in order; the curriculum passes several.
        resume: continue from the latest checkpoint under ``output_dir/checkpoints`` when there is one.
        stop_after: raise ``TrainingInterrupted`` after this global step (to test resuming).

    Returns:
        FitResult; ``adapter_dir`` holds the best adapter (by validation loss; the last one without val data).
        The model's weights are set to it, except under FSDP or ZeRO-3 sharding (several processes), where
        they stay sharded at the last step: load the adapter from ``adapter_dir``.
    """
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    plan = batch_plan(stages, config)
    if world()[0] == 0:
        plan.to_csv(output / "batch_plan.csv", index=False)
    state, checkpoint = _Run(), latest_checkpoint(output) if resume else None
    if checkpoint is not None:
        state = _Run(**load_fit_state(checkpoint / STATE, RUN_TYPES))
        load_trainable(model, checkpoint / TRAINABLE)
        set_rng_state(load_rng(checkpoint / RNG))
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    sharding = sharding_from(config.sharding)
    shard_model(model, sharding)
    start = time.perf_counter()
    for index, stage in enumerate(stages):
        if index < state.stage:
            continue
        if index > state.stage:
            state.stage, state.stage_step, checkpoint = index, 0, None
        run_stage(model, collator, stage, config, state, checkpoint, stop_after, sharding)
        checkpoint = None
    finish(model, output, state)
    return FitResult(output / "adapter", pd.DataFrame(state.log), state.best_val_loss, state.global_step,
                     time.perf_counter() - start, state.samples, state.tokens, plan)


def finish(model, output: Path, state: _Run) -> None:
    """Write ``adapter/`` (the best by validation loss, else the last weights) and ``log.csv``."""
    best = output / "best"
    if state.best_val_loss is not None and best.is_dir() and is_sharded(model):
        if world()[0] == 0:
            shutil.rmtree(output / "adapter", ignore_errors=True)
            shutil.copytree(best, output / "adapter")
    else:
        if state.best_val_loss is not None and best.is_dir():
            load_trainable(model, best / TRAINABLE)
        save_adapter(model, output / "adapter")
    if world()[0] == 0:
        pd.DataFrame(state.log).to_csv(output / "log.csv", index=False)
    barrier()
