"""LoRA fine-tuning over one or more stages, with checkpoints, exact resume and data parallelism.

The same ``fit`` runs in a notebook, from ``python -m brainvlm train`` and under ``torchrun``. Data
parallelism is plain: every rank takes its slice of each global batch, the loss is the sum over label
tokens divided by the global token count, and gradients are summed across ranks. So a run on N
processes computes the same gradient as one process with the same global batch (up to float order).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

IGNORE = -100


@dataclass
class Stage:
    """One stage of training (the curriculum has several): its data and its length."""

    name: str
    train: list[dict]
    val: list[dict] = field(default_factory=list)
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    lr: float | None = None  # overrides TrainConfig.lr when set


@dataclass
class TrainConfig:
    """Optimisation, checkpointing and precision options."""

    output_dir: str
    batch_size: int = 8  # global batch = batch_size * grad_accum * world size
    grad_accum: int = 1
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    schedule: str = "cosine"  # cosine | linear | constant
    max_grad_norm: float = 1.0
    precision: str = "fp32"  # fp32 | bf16 | fp16
    gradient_checkpointing: bool = False
    eval_every: int = 0  # steps; 0 = at the end of each stage only
    save_every: int = 0  # steps; 0 = at the end of each stage only
    keep_checkpoints: int = 2
    seed: int = 0
    progress: bool = True


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> None:
    """Join the process group that torchrun describes in the environment (gloo on CPU, nccl on GPU)."""
    import os

    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def batch_order(n_samples: int, seed: int, epoch: int) -> list[int]:
    """The sample order of one epoch: a permutation fixed by (seed, epoch), so resuming can skip to a step."""
    return np.random.default_rng([seed, epoch]).permutation(n_samples).tolist()


def stage_steps(stage: Stage, global_batch: int) -> int:
    """Optimizer steps in a stage (incomplete final batches are dropped so every step has the same size)."""
    per_epoch = len(stage.train) // global_batch
    if per_epoch == 0:
        raise ValueError(f"stage '{stage.name}': {len(stage.train)} training samples is fewer than one "
                         f"global batch of {global_batch}; lower batch_size or grad_accum")
    return stage.max_steps if stage.max_steps is not None else max(1, int(math.ceil(stage.epochs * per_epoch)))


def step_indices(stage: Stage, step: int, global_batch: int, seed: int) -> list[int]:
    """Sample indices of the global batch at ``step`` of a stage."""
    per_epoch = len(stage.train) // global_batch
    epoch, within = divmod(step, per_epoch)
    order = batch_order(len(stage.train), seed, epoch)
    return order[within * global_batch:(within + 1) * global_batch]


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
    """Summed cross-entropy over the label tokens of a batch, and how many label tokens there were."""
    from brainvlm.collate import model_inputs

    device = next(p.device for p in model.parameters())
    inputs = model_inputs(batch, device)
    labels = batch["labels"].to(device)
    with autocast(precision, device):
        logits = model(**inputs).logits
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]),
                                             shift_labels.reshape(-1), ignore_index=IGNORE, reduction="sum")
    return loss, int((shift_labels != IGNORE).sum())


def autocast(precision: str, device: torch.device):
    """Mixed-precision context for bf16/fp16; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The trainable parameters (LoRA, projector, norms), detached to CPU."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


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

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else float("nan")

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def all_reduce_sum(value: float | torch.Tensor) -> float:
    """Sum a number over ranks (identity in a single process)."""
    if world()[1] == 1:
        return float(value)
    tensor = torch.tensor(float(value), dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor)


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum gradients over ranks: each rank's loss is already divided by the global token count."""
    if world()[1] == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)


def rank_slices(indices: list[int], batch_size: int, grad_accum: int) -> list[list[int]]:
    """This rank's micro-batches of one global batch (same samples as one process with the same global batch)."""
    rank, size = world()
    per_micro = batch_size * size
    micro = [indices[k * per_micro:(k + 1) * per_micro] for k in range(grad_accum)]
    return [m[rank * batch_size:(rank + 1) * batch_size] for m in micro]


def evaluate_loss(model, collator, samples: list[dict], batch_size: int, precision: str) -> float:
    """Token-mean loss over a sample list (sharded across ranks)."""
    rank, size = world()
    mine = samples[rank::size]
    total, tokens = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            batch = collator(mine[start:start + batch_size])
            if batch is None:
                continue
            loss, n = token_loss_sum(model, batch, precision)
            total, tokens = total + float(loss), tokens + n
    model.train(was_training)
    total, tokens = all_reduce_sum(total), all_reduce_sum(tokens)
    return total / tokens if tokens else float("nan")


def save_checkpoint(folder: Path, model, optimizer, scheduler, state: dict[str, Any]) -> None:
    """Write a resumable checkpoint atomically (a temp folder renamed into place); rank 0 only."""
    if world()[0] != 0:
        return
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(trainable_state(model), tmp / "trainable.pt")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True, default=float))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint with the highest step under ``checkpoints/``."""
    found = [p for p in (Path(output_dir) / "checkpoints").glob("step-*") if (p / "state.json").is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[1])) if found else None


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    if world()[0] != 0 or keep <= 0:
        return
    found = sorted((Path(output_dir) / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_trainable(model, path: Path) -> None:
    """Load a ``trainable.pt`` state into the model's trainable parameters."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise KeyError(f"{path}: {len(missing)} parameters not in the model, e.g. {missing[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def save_adapter(model, folder: Path) -> None:
    """Save the adapter (PEFT format) plus every trainable tensor, rank 0 only."""
    if world()[0] != 0:
        return
    from brainvlm.models import save_adapter as save_peft_adapter

    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        save_peft_adapter(model, folder)
    torch.save(trainable_state(model), folder / "trainable.pt")


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


def train_step(model, collator, stage: Stage, step: int, config: TrainConfig, seed: int,
               params: list[torch.nn.Parameter]) -> dict[str, float]:
    """One optimizer step's forward/backward over this rank's micro-batches; returns loss and counts."""
    size = world()[1]
    indices = step_indices(stage, step, config.batch_size * config.grad_accum * size, seed)
    batches = [collator([stage.train[i] for i in part]) for part in rank_slices(indices, config.batch_size,
                                                                                config.grad_accum)]
    batches = [b for b in batches if b is not None]
    local_tokens = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
    global_tokens = all_reduce_sum(local_tokens)
    if global_tokens == 0:
        raise RuntimeError(f"stage '{stage.name}' step {step}: no assistant tokens in the batch; "
                           f"check the chat template's generation markers")
    loss_sum = 0.0
    for batch in batches:
        loss, _ = token_loss_sum(model, batch, config.precision)
        (loss / global_tokens).backward()
        loss_sum += float(loss.detach())
    sum_gradients(params)
    samples = all_reduce_sum(sum(len(b["input_ids"]) for b in batches))
    return {"loss": all_reduce_sum(loss_sum) / global_tokens, "tokens": global_tokens, "samples": samples}


def run_stage(model, collator, stage: Stage, config: TrainConfig, state: _Run,
              resume_from: Path | None, stop_after: int | None) -> None:
    """Train one stage from ``state.stage_step`` to its end, evaluating and checkpointing on the way."""
    output = Path(config.output_dir)
    size = world()[1]
    total = stage_steps(stage, config.batch_size * config.grad_accum * size)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.lr or config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config.schedule, int(config.warmup_ratio * total), total))
    if resume_from is not None:
        optimizer.load_state_dict(torch.load(resume_from / "optimizer.pt", weights_only=False))
        scheduler.load_state_dict(torch.load(resume_from / "scheduler.pt", weights_only=False))
    seed = config.seed + 1000 * state.stage
    bar = tqdm(total=total, initial=state.stage_step, desc=f"stage {stage.name}",
               disable=not config.progress or world()[0] != 0)
    model.train()
    while state.stage_step < total:
        start = time.perf_counter()
        lr = scheduler.get_last_lr()[0]
        out = train_step(model, collator, stage, state.stage_step, config, seed, params)
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.stage_step += 1
        state.global_step += 1
        state.samples += int(out["samples"])
        state.tokens += int(out["tokens"])
        row = {"stage": stage.name, "step": state.global_step, "stage_step": state.stage_step, "lr": lr,
               "loss": out["loss"], "val_loss": None, "seconds": time.perf_counter() - start}
        last = state.stage_step == total
        if stage.val and ((config.eval_every and state.stage_step % config.eval_every == 0) or last):
            row["val_loss"] = evaluate_loss(model, collator, stage.val, config.batch_size, config.precision)
            if state.best_val_loss is None or row["val_loss"] < state.best_val_loss:
                state.best_val_loss = row["val_loss"]
                save_adapter(model, output / "best")
        state.log.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{out['loss']:.3f}")
        if (config.save_every and state.stage_step % config.save_every == 0) or last:
            save_checkpoint(output / "checkpoints" / f"step-{state.global_step}", model, optimizer, scheduler,
                            asdict(state))
            prune_checkpoints(output, config.keep_checkpoints)
            barrier()
        if stop_after is not None and state.global_step >= stop_after:
            bar.close()
            raise TrainingInterrupted(f"stopped after step {state.global_step} (stop_after)")
    bar.close()


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def fit(model, collator, stages: list[Stage], config: TrainConfig, resume: bool = False,
        stop_after: int | None = None) -> FitResult:
    """Train ``model`` (already wrapped with LoRA) over the stages; keep the best adapter by val loss.

    Args:
        collator: callable turning a list of canonical samples into a batch (``brainvlm.collate.Collator``).
        stages: run in order; the curriculum passes several.
        resume: continue from the latest checkpoint under ``output_dir/checkpoints`` when there is one.
        stop_after: raise ``TrainingInterrupted`` after this global step (to test resuming).

    Returns:
        FitResult; ``adapter_dir`` holds the best adapter (by validation loss; the last one without val data),
        and the model's weights are set to it.
    """
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    state, checkpoint = _Run(), latest_checkpoint(output) if resume else None
    if checkpoint is not None:
        state = _Run(**json.loads((checkpoint / "state.json").read_text()))
        load_trainable(model, checkpoint / "trainable.pt")
        set_rng_state(torch.load(checkpoint / "rng.pt", weights_only=False))
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    start = time.perf_counter()
    for index, stage in enumerate(stages):
        if index < state.stage:
            continue
        if index > state.stage:
            state.stage, state.stage_step, checkpoint = index, 0, None
        run_stage(model, collator, stage, config, state, checkpoint, stop_after)
        checkpoint = None
    if world()[0] == 0:
        best = output / "best"
        if state.best_val_loss is not None and best.is_dir():
            load_trainable(model, best / "trainable.pt")
        save_adapter(model, output / "adapter")
        pd.DataFrame(state.log).to_csv(output / "log.csv", index=False)
    barrier()
    return FitResult(output / "adapter", pd.DataFrame(state.log), state.best_val_loss, state.global_step,
                     time.perf_counter() - start, state.samples, state.tokens)
