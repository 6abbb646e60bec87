"""Run by tests under torchrun: a two-stage ``fit.fit`` on the PNG samples of a test, optionally
interrupted (``--stop-after``) or resumed (``--resume``). The sharding comes from the environment, as
accelerate launch would set it (``ACCELERATE_USE_FSDP`` / ``ACCELERATE_USE_DEEPSPEED``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from brainvlm.data.views import ViewConfig
from brainvlm.model import collate, loader, lora
from brainvlm.train import config as train_config
from brainvlm.train import distributed, fit


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--samples", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop-after", type=int)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with distributed.process_group():  # as ``brainvlm train`` runs a fit
        samples = json.loads(Path(args.samples).read_text(encoding="utf-8"))
        model, processor = loader.load(args.base)
        model = lora.add_lora(model, r=4, alpha=8, seed=0)
        collator = collate.Collator(processor, collate.CollateConfig(image_root=args.images,
                                                                     view=ViewConfig(size=32)))
        stages = [train_config.Stage("a", samples[:16], samples[16:], max_steps=4),
                  train_config.Stage("b", samples[8:], samples[16:], max_steps=3, lr=5.0e-4)]
        config = train_config.TrainConfig(output_dir=args.out, batch_size=2, lr=2.0e-3, save_every=2,
                                          eval_every=2, progress=False)
        try:
            fit.fit(model, collator, stages, config, resume=args.resume, stop_after=args.stop_after)
        except fit.TrainingInterrupted as stop:
            print(f"interrupted: {stop}")
        print(f"sharded: {distributed.is_sharded(model)}")
        del model, collator  # the FSDP2 modules hold the process group: released before it is destroyed
    print(f"group threads after the block: {distributed.group_threads()}")  # none may run into interpreter exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
