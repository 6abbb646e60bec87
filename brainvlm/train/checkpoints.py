"""Checkpoints and adapters on disk: written so that loading them never runs code from a file.

A checkpoint folder (``checkpoints/step-N/``) holds

    trainable.safetensors   every trainable tensor (safetensors: tensors only, nothing executable)
    rng.json                Python, NumPy and torch random states as JSON
    state.json              where the fit stands (stage, step, best loss, log)
    optimizer.pt, scheduler.pt   optimizer and scheduler state, read with ``torch.load(weights_only=True)``,
                            which accepts tensors and plain values only and refuses any other pickle
    deepspeed/              DeepSpeed's own files (ZeRO), which its loader unpickles: the one exception.
                            Their SHA-256 hashes are recorded in ``deepspeed.sha256.json`` when written and
                            resume refuses a folder whose files differ (a checkpoint someone swapped).

``adapter/`` holds the PEFT adapter plus ``trainable.safetensors``. Folders are written to a temporary
name and renamed into place, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from brainvlm.core.jsonio import read_json, write_json
from brainvlm.train.distributed import (
    Stepper,
    barrier,
    full_optimizer_state,
    gather_trainable,
    is_sharded,
    world,
)

TRAINABLE = "trainable.safetensors"
RNG = "rng.json"
STATE = "state.json"
DEEPSPEED_HASHES = "deepspeed.sha256.json"


class CheckpointError(RuntimeError):
    """A checkpoint file brainvlm refuses to load; the message names the file and what to do."""


# ------------------------------------------------------------------------------------------ tensors
def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write tensors as safetensors (contiguous CPU copies: safetensors refuses shared storage)."""
    save_file({name: value.detach().cpu().contiguous().clone() for name, value in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file."""
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own SafetensorError for a file that is not one
        raise CheckpointError(f"{path}: not a safetensors file ({type(err).__name__}: {err}); the checkpoint "
                              "is damaged or foreign: delete the folder to start over") from err


def load_state(path: Path) -> Any:
    """Optimizer or scheduler state: ``torch.load`` with ``weights_only=True`` (no code runs from the file)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused: the file holds Python objects other than tensors and plain "
                              "values, and loading them could run code (a crafted or foreign file). Delete the "
                              "checkpoint folder and train again, or resume from a checkpoint brainvlm wrote") from err


# -------------------------------------------------------------------------------------------- RNG
def _bytes(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")


def rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch CPU random states as JSON-ready values."""
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [name, [int(k) for k in keys], int(position), int(has_gauss), float(cached)],
            "torch": _bytes(torch.get_rng_state())}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (after a JSON round trip)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    raw = np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()
    torch.set_rng_state(torch.from_numpy(raw))


def load_rng(path: Path) -> dict[str, Any]:
    """``rng.json`` of a checkpoint; anything else is refused with the file named."""
    try:
        state = read_json(path)
        if not isinstance(state, dict) or set(state) != {"python", "numpy", "torch"}:
            raise ValueError("expected an object with python, numpy and torch states")
        return state
    except ValueError as err:
        reason = str(err).removeprefix(f"{path}: ")
        raise CheckpointError(f"{path}: not a random state brainvlm wrote ({reason}); delete the checkpoint folder "
                              "to start over") from err


def load_fit_state(path: Path, types: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    """``state.json`` of a checkpoint as the fit's keyword arguments, each of its type in ``types``.

    Raises:
        CheckpointError: not JSON, not an object, an unknown key or a value of another type, naming the file.
    """
    try:
        state = read_json(path)
    except ValueError as err:
        raise CheckpointError(f"{path}: {str(err).removeprefix(f'{path}: ')}; the checkpoint is damaged: delete "
                              "its folder to start over") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the fit state is a JSON {type(state).__name__}, expected an object with "
                              f"{sorted(types)}; the checkpoint is damaged or foreign: delete its folder to "
                              "start over")
    unknown = sorted(set(state) - set(types))
    wrong = sorted(key for key, value in state.items()
                   if key in types and (isinstance(value, bool) or not isinstance(value, types[key])))
    if unknown or wrong:
        raise CheckpointError(f"{path}: not a fit state brainvlm wrote (unknown keys {unknown}, values of the "
                              f"wrong type {wrong}); delete the checkpoint folder to start over")
    return state


# ---------------------------------------------------------------------------------------- DeepSpeed
def _file_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def record_deepspeed_hashes(checkpoint: Path) -> None:
    """Record the SHA-256 of every file DeepSpeed wrote under ``checkpoint/deepspeed`` (rank 0)."""
    write_json(_file_hashes(checkpoint / "deepspeed"), checkpoint / DEEPSPEED_HASHES)


def verify_deepspeed_hashes(checkpoint: Path) -> None:
    """Refuse DeepSpeed files that differ from those recorded when the checkpoint was written.

    Raises:
        CheckpointError: no record, or files added, removed or changed since (named).
    """
    record = checkpoint / DEEPSPEED_HASHES
    if not record.is_file():
        raise CheckpointError(f"{checkpoint}: no {DEEPSPEED_HASHES}; DeepSpeed's loader unpickles its files, so "
                              "brainvlm resumes only from DeepSpeed checkpoints it wrote and hashed")
    expected, found = read_json(record), _file_hashes(checkpoint / "deepspeed")
    changed = sorted(name for name in set(expected) | set(found) if expected.get(name) != found.get(name))
    if changed:
        raise CheckpointError(f"{checkpoint / 'deepspeed'}: {len(changed)} file(s) differ from when the checkpoint "
                              f"was written: {changed[:5]}; refusing to unpickle them. Delete the folder to "
                              "start over")


# ------------------------------------------------------------------------------- optimizer state
def save_optimizer(stepper: Stepper, folder: Path) -> None:
    """Write the stepper's optimizer and scheduler state into ``folder`` (every rank; it must exist)."""
    if stepper.engine is not None:
        stepper.engine.save_checkpoint(str(folder / "deepspeed"), tag="state")
        barrier()
        if world()[0] == 0:
            record_deepspeed_hashes(folder)
        return
    model, optimizer = stepper.model, stepper.optimizer
    state = optimizer.state_dict() if not is_sharded(model) else full_optimizer_state(model, optimizer)
    if world()[0] == 0:
        torch.save(state, folder / "optimizer.pt")
        torch.save(stepper.scheduler.state_dict(), folder / "scheduler.pt")


def load_optimizer(stepper: Stepper, folder: Path) -> None:
    """Restore what :func:`save_optimizer` wrote, loading nothing that could run code."""
    if stepper.engine is not None:
        verify_deepspeed_hashes(folder)
        path, _ = stepper.engine.load_checkpoint(str(folder / "deepspeed"), tag="state")
        if path is None:
            raise FileNotFoundError(f"{folder / 'deepspeed'}: no DeepSpeed state to resume from")
        return
    sharded = is_sharded(stepper.model)
    state = load_state(folder / "optimizer.pt") if world()[0] == 0 or not sharded else {}
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(stepper.model, stepper.optimizer, state, options=StateDictOptions(
            full_state_dict=True, broadcast_from_rank0=True))
    else:
        stepper.optimizer.load_state_dict(state)
    stepper.scheduler.load_state_dict(load_state(folder / "scheduler.pt"))


# ------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(folder: Path, model, stepper, state: dict[str, Any]) -> None:
    """Write a resumable checkpoint atomically (a temp folder renamed into place); every rank takes part."""
    rank = world()[0]
    tmp = folder.with_name(folder.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    trainable = gather_trainable(model)
    save_optimizer(stepper, tmp)
    if rank == 0:
        save_tensors(trainable, tmp / TRAINABLE)
        write_json(rng_state(), tmp / RNG)
        write_json(state, tmp / STATE, indent=1)
    barrier()
    if rank == 0:
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    barrier()


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint with the highest step under ``checkpoints/``."""
    found = [p for p in (Path(output_dir) / "checkpoints").glob("step-*") if (p / STATE).is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[1])) if found else None


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    if world()[0] != 0 or keep <= 0:
        return
    found = sorted((Path(output_dir) / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_trainable(model, path: Path) -> None:
    """Load a ``trainable.safetensors`` file into the model's trainable parameters."""
    state = load_tensors(path)
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise KeyError(f"{path}: {len(missing)} parameters not in the model, e.g. {missing[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def save_adapter(model, folder: Path) -> None:
    """Save the adapter (PEFT format) plus every trainable tensor; every rank takes part, rank 0 writes."""
    from brainvlm.model.lora import save_adapter as save_peft_adapter

    state = gather_trainable(model)
    if world()[0] != 0:
        return
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        save_peft_adapter(model, folder, state_dict=state)
    save_tensors(state, folder / TRAINABLE)
