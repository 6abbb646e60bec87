"""Processes, devices and sharding for ``brainvlm.train.fit`` under torchrun or ``accelerate launch``.

Two ways to spread one training over N processes; both give the gradient of one process with the same
global batch (the loss is divided by the global count of answer tokens):

``data_parallel``
    Every rank holds the whole model and sums the gradients of the trainable parameters with
    ``all_reduce`` (gloo on CPU, NCCL on GPU). With LoRA only a few MB move per step.
``fsdp``
    PyTorch's FSDP2 (``fully_shard``): each transformer layer of the vision tower and the language model
    (the classes in the model's ``_no_split_modules``) and then the root are sharded across ranks.
    Parameters, gradients and optimizer state are split N ways. ``reshard_after_forward=True`` frees
    the gathered parameters after each layer's forward (ZeRO-3-like); ``False`` keeps them until
    backward (ZeRO-2-like: less communication, more memory). ``offload`` keeps shards in CPU memory.
``deepspeed``
    A DeepSpeed engine with ZeRO stage 2 (optimizer state and gradients sharded) or 3 (parameters too),
    ``offload`` putting optimizer state (and, at stage 3, parameters) in CPU memory.

``accelerate launch`` with a config of ``configs/accelerate/`` exports ``ACCELERATE_USE_FSDP=true`` and
``FSDP_*`` settings, or ``ACCELERATE_USE_DEEPSPEED=true`` and ``ACCELERATE_DEEPSPEED_*`` settings;
``sharding_from`` reads them, so the same ``python -m brainvlm train`` runs under torchrun and accelerate.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

MODES = ("data_parallel", "fsdp", "deepspeed")


@dataclass(frozen=True)
class Sharding:
    """How a multi-process fit splits the model (ignored in a single process)."""

    mode: str = "data_parallel"  # data_parallel | fsdp | deepspeed
    reshard_after_forward: bool = True  # fsdp: True ~ ZeRO-3, False ~ ZeRO-2
    zero_stage: int = 2  # deepspeed: 2 or 3
    offload: bool = False  # shards (fsdp) or optimizer state (deepspeed) in CPU memory

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"sharding must be one of {MODES}, got {self.mode!r}")
        if self.zero_stage not in (2, 3):
            raise ValueError(f"DeepSpeed ZeRO stage must be 2 or 3, got {self.zero_stage!r}")


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> None:
    """Join the process group that torchrun (or accelerate launch) describes in the environment."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        # Its functions take ``group=group.WORLD`` as a default, evaluated at import. Imported once the group
        # exists (loading a model imports ``torch.distributed.fsdp``, which imports it), they would hold the
        # group for the life of the process, past ``destroy_process_group``.
        import torch.distributed.nn.functional

        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def shutdown() -> None:
    """Leave the process group while the interpreter is alive: every rank done with its collectives (a barrier),
    what holds the group released (DTensor's caches, then a garbage collection), the group destroyed, and a
    warning if its threads still run.

    A group that something still holds outlives ``destroy_process_group``: it is destroyed, and its backend
    threads joined, during interpreter exit, where a backend thread that reaches for the interpreter aborts the
    process (``terminate called without an active exception``). Callers drop their references to the model
    before calling this; ``process_group`` does it for an exception's frames too. DeepSpeed engines (ZeRO-2
    and ZeRO-3) are the exception: their hooks keep them, and their groups, alive until the process ends.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        clear_dtensor_caches()
        gc.collect()
        dist.destroy_process_group()
        warn_of_group_threads()


def clear_dtensor_caches() -> None:
    """Empty the caches DTensor keeps for the life of the process, so that no device mesh outlives the model.

    DTensor memoizes its sharding decisions, redistribution plans and mesh topologies, keyed on or holding the
    FSDP2 parameters' specs, each of which holds the device mesh, which holds the process group: without this,
    a group an FSDP2 model ever used outlives ``destroy_process_group`` and is destroyed, its gloo threads
    joined, during interpreter exit. The caches and the calls that clear them are torch's own, and private
    (torch 2.13, the locked version): a missing one is skipped, and ``warn_of_group_threads`` (and the sharded
    tests, which require no group thread after ``shutdown``) show when a newer torch keeps the group alive.
    """
    if "torch.distributed.tensor" not in sys.modules:
        return  # no DTensor was ever made
    from torch.distributed.tensor import _collective_utils, _redistribute, debug

    clears = [getattr(debug, "_clear_sharding_prop_cache", None),  # op sharding: Python cache and fast path
              getattr(_redistribute, "clear_redistribute_planner_cache", None),
              getattr(getattr(_redistribute, "_gen_transform_infos", None), "cache_clear", None),
              getattr(getattr(getattr(_collective_utils, "MeshTopoInfo", None), "build_from_mesh", None),
                      "cache_clear", None)]
    for clear in clears:
        if clear is not None:
            clear()


GROUP_THREADS = ("pt_gloo", "gloo_", "pt_nccl")  # the names c10d and gloo give their threads


def group_threads() -> list[str]:
    """The names of this process's threads that belong to a process group's backend (gloo's run loops and
    transport loop, NCCL's watchdog), read from ``/proc`` ([] where there is none). A thread names itself when
    it first runs, so one just started may not be listed yet; one that outlived its group long since has."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return []
    names = []
    for task in tasks.iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:  # the thread ended while we looked
            continue
    return sorted(name for name in names if name.startswith(GROUP_THREADS))


def warn_of_group_threads() -> None:
    """Warn when the group's threads outlive its destruction: something still holds the group."""
    left = group_threads()
    if left:
        warnings.warn(f"{len(left)} threads of the process group still run after it was destroyed "
                      f"({', '.join(left)}): an object still holds the group (a model, an optimizer, a device "
                      "mesh, a DeepSpeed engine). They end at interpreter exit, where a backend thread can abort "
                      "the process ('terminate called without an active exception'); release those objects "
                      "before the process group's block ends.", RuntimeWarning, stacklevel=3)


@contextmanager
def process_group() -> Iterator[None]:
    """Join the process group for the ``with`` block and leave it (``shutdown``) when the block ends, however.

    An exception raised in the block (``TrainingInterrupted``, an error) carries a traceback whose frames still
    hold the model, and through it the group: their locals are cleared (``traceback.clear_frames``; the
    traceback still prints) before the group is destroyed, so nothing that holds the group outlives it into
    interpreter exit. The block itself drops its own references to the model before it ends.

    A rank that dies on a signal (an abort in a backend's thread, a segmentation fault) prints the Python
    stack of every thread to stderr (``faulthandler``), which torchrun shows with the failed rank.
    """
    if not faulthandler.is_enabled():
        faulthandler.enable()
    init_distributed()
    try:
        yield
    except BaseException as exc:
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        shutdown()


def local_device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` when there are GPUs, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def all_reduce_sum(value: float | torch.Tensor) -> float:
    """Sum a number over ranks (identity in a single process)."""
    if world()[1] == 1:
        return float(value)
    device = local_device() if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor)


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum gradients over ranks (data parallel): each rank's loss is already divided by the global count."""
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


def sharding_from(mode: str, environ: dict[str, str] | None = None) -> Sharding:
    """The sharding of a fit: ``mode`` (a param), unless accelerate launch exported an FSDP or DeepSpeed config.

    Raises:
        ValueError: an FSDP sharding strategy other than FULL_SHARD / SHARD_GRAD_OP, or a ZeRO stage other than 2 / 3.
    """
    env = os.environ if environ is None else environ
    if env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        stage = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
        offload = env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none").lower() == "cpu"
        return Sharding("deepspeed", zero_stage=int(stage) if stage.isdigit() else -1, offload=offload)
    if env.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return Sharding(mode)
    strategy = env.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").upper()
    by_strategy = {"FULL_SHARD": True, "1": True, "SHARD_GRAD_OP": False, "2": False}
    if strategy not in by_strategy:
        raise ValueError(f"FSDP_SHARDING_STRATEGY {strategy!r} is not supported; use FULL_SHARD or SHARD_GRAD_OP")
    reshard = env.get("FSDP_RESHARD_AFTER_FORWARD", "").lower()
    return Sharding("fsdp", reshard_after_forward=by_strategy[strategy] if reshard not in ("true", "false")
                    else reshard == "true", offload=env.get("FSDP_OFFLOAD_PARAMS", "false").lower() == "true")


def is_sharded(model: Any) -> bool:
    """Whether the model's parameters are split across ranks (FSDP2 DTensors or DeepSpeed ZeRO-3 partitions)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) or hasattr(p, "ds_id") for p in model.parameters())


def shard_model(model: Any, sharding: Sharding) -> Any:
    """Shard ``model`` in place with FSDP2 across all ranks (each ``_no_split_modules`` layer, then the root).

    A no-op in a single process or in data-parallel mode. Load any checkpointed weights before this call.
    """
    if sharding.mode != "fsdp" or world()[1] == 1 or is_sharded(model):
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    mesh = init_device_mesh(local_device().type, (world()[1],))
    layer_names = set()
    for module in model.modules():
        layer_names.update(getattr(module, "_no_split_modules", None) or [])
    options = {"mesh": mesh, "reshard_after_forward": sharding.reshard_after_forward,
               "offload_policy": CPUOffloadPolicy() if sharding.offload else OffloadPolicy()}
    layers = [m for m in model.modules() if type(m).__name__ in layer_names]
    if not layers:
        raise ValueError(f"{type(model).__name__}: no layer classes to shard (_no_split_modules is empty)")
    for layer in layers:
        fully_shard(layer, **options)
    fully_shard(model, **options)
    return model


def reshard(model: Any) -> None:
    """Return FSDP2 modules to their sharded state (without resharding after forward, a forward that no
    backward follows, as in validation, leaves them gathered, and their parameters are then not DTensors)."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def gather_trainable(model: Any) -> dict[str, torch.Tensor]:
    """Whole values of the trainable parameters on the CPU, gathered from shards (call on every rank)."""
    from torch.distributed.tensor import DTensor

    reshard(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if any(hasattr(p, "ds_id") for _, p in named):  # DeepSpeed ZeRO-3 partitions
        import deepspeed

        with deepspeed.zero.GatheredParameters([p for _, p in named]):
            return {n: p.detach().cpu().clone() for n, p in named}
    return {n: (p.full_tensor() if isinstance(p, DTensor) else p).detach().cpu().clone() for n, p in named}


class Stepper:
    """Optimizer, scheduler, backward and step of one stage, for the fit's sharding.

    ``backward`` takes a micro-batch's loss already divided by the global count of answer tokens, so the
    gradients of all micro-batches and ranks add up to the gradient of one large batch; ``step`` clips
    and updates. ``forward_model`` is what to call for the loss (a DeepSpeed engine, or the model).
    """

    def __init__(self, model: Any, lr: float, weight_decay: float, schedule: Any, sharding: Sharding,
                 batch_size: int, grad_accum: int, max_grad_norm: float) -> None:
        self.model, self.sharding, self.max_grad_norm = model, sharding, max_grad_norm
        self.size = world()[1]
        self.params = [p for p in model.parameters() if p.requires_grad]
        plain = self.size == 1 or sharding.mode == "data_parallel"
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay,
                                           fused=plain and local_device().type in ("cpu", "cuda"))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.forward_model, self.engine = model, None
        if sharding.mode == "deepspeed" and self.size > 1:
            self._start_deepspeed(batch_size, grad_accum)

    def _start_deepspeed(self, batch_size: int, grad_accum: int) -> None:
        import deepspeed

        zero: dict[str, Any] = {"stage": self.sharding.zero_stage}
        if self.sharding.offload:
            zero["offload_optimizer"] = {"device": "cpu"}
        config = {"train_micro_batch_size_per_gpu": batch_size, "gradient_accumulation_steps": grad_accum,
                  "gradient_clipping": self.max_grad_norm, "zero_optimization": zero,
                  "zero_allow_untested_optimizer": True, "steps_per_print": 10 ** 9, "wall_clock_breakdown": False}
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=self.model, optimizer=self.optimizer, lr_scheduler=self.scheduler, config=config)
        self.forward_model = self.engine

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def backward(self, loss: torch.Tensor) -> None:
        if self.engine is not None:
            # the engine averages over ranks and divides by the accumulation steps: undo both
            self.engine.backward(loss * self.size * self.engine.gradient_accumulation_steps())
            self.engine.step()  # updates only at the accumulation boundary
        elif self.sharding.mode == "fsdp" and self.size > 1:
            (loss * self.size).backward()  # FSDP averages gradients over ranks
        else:
            loss.backward()

    def step(self) -> None:
        if self.engine is not None:
            return
        if self.sharding.mode == "data_parallel":
            sum_gradients(self.params)
        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)


def full_optimizer_state(model: Any, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    reshard(model)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                               cpu_offload=True))
