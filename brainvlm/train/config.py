"""What a fit is given: its stages (data and length) and its optimisation, checkpointing and precision options."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    group_by_length: bool = False  # batches of similar length (less padding); with classification answers of
    # different lengths this also groups labels, so batches would be label-homogeneous: off by default
    sharding: str = "data_parallel"  # data_parallel | fsdp | deepspeed (with several processes); accelerate
    # launch configs of configs/accelerate/ set it (brainvlm.train.distributed.sharding_from)
