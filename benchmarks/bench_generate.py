"""Samples/s of batched, left-padded generation against a Python loop that calls ``generate`` per sample.

Both methods answer the same comparison conversations (a reference image with its label, then a query
image) with the same model, the same greedy settings and the same stop tokens, in one run, so the
printed ratio compares numbers measured side by side. The loop is the baseline every evaluation script
starts from; the batched path is ``brainvlm.eval.generate.predict`` (with its JSONL appends and fsyncs).

    python benchmarks/bench_generate.py                      # CPU, tiny model, batch 16
    python benchmarks/bench_generate.py --quick              # smoke run
    python benchmarks/bench_generate.py --size real --device cuda --batch-size 32   # GPU, bf16

``--size real`` builds llava-interleave-qwen-0.5b's architecture with random weights (864M parameters);
the LoRA adapter is random too (its B matrices drawn, so it is not a no-op).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from brainvlm.eval import generate
from brainvlm.model import collate, loader, lora, templates, tiny


def write_images(folder: Path, n: int, size: int, seed: int) -> list[str]:
    """n random grey-level PNG images (noise over a bright disc), as paths relative to ``folder``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2).astype(np.float32)
    names = []
    for i in range(n):
        grey = disc * rng.uniform(120, 220) + rng.normal(0, 25, (size, size))
        pixels = np.clip(grey, 0, 255).astype(np.uint8)
        names.append(f"img-{i:04d}.png")
        Image.fromarray(pixels).convert("RGB").save(folder / names[-1])
    return names


def _turn(role: str, text: str, image: str | None = None) -> dict:
    content = [{"type": "text", "text": text}]
    if image is not None:
        content.append({"type": "image", "modality": "other", "image_path": image})
    return {"role": role, "content": content}


def make_samples(images: list[str], n: int, seed: int) -> list[dict]:
    """n two-image comparison conversations in the canonical format; labels vary so prompt lengths do."""
    rng = np.random.default_rng(seed)
    labels = ["male", "female"]
    samples = []
    for i in range(n):
        ref, query = rng.choice(len(images), size=2, replace=False)
        label = labels[int(rng.integers(2))]
        turns = [_turn("user", f"Here is a scan of a {label} participant.", images[ref]),
                 _turn("assistant", "Understood."),
                 _turn("user", "What is the sex of this participant?", images[query]),
                 _turn("assistant", f"The participant is {label}.")]
        samples.append({"id": f"bench_{i:05d}", "task": "comparison_categorical", "conversations": turns,
                        "metadata": {"target": label}})
    return samples


def build_model(size: str, device: str, dtype: torch.dtype, seed: int) -> tuple:
    """The tiny (or real-size) LLaVA-interleave model with a random LoRA adapter, and its processor."""
    model, processor = tiny.tiny_model(seed=seed, size=size)
    model = lora.add_lora(model, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return model.to(device=device, dtype=dtype).eval(), processor


@torch.no_grad()
def loop_one_at_a_time(model, processor, samples: list[dict], config: collate.CollateConfig, stops: list[int],
                       max_new_tokens: int) -> list[str]:
    """The baseline: for each sample, build its prompt, call ``generate``, decode."""
    texts = []
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    for sample in samples:
        encoded = collate.encode_sample(sample, processor, config, prompt_only=True)
        inputs = {k: encoded[k].unsqueeze(0).to(device) for k in ("input_ids", "attention_mask")}
        inputs["pixel_values"] = encoded["pixel_values"].to(device, dtype)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                pad_token_id=processor.tokenizer.pad_token_id)
        new = generate.cut_at_stop(output[0, inputs["input_ids"].shape[1]:].tolist(), stops)
        texts.append(processor.tokenizer.decode(new, skip_special_tokens=True).strip())
    return texts


def timed(fn, device: str) -> tuple[object, float]:
    """``fn()`` and its wall time (CUDA synchronised)."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["tiny", "real"], default="tiny")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--n", type=int, default=None, help="samples (default: 64 tiny, 128 real)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch (default: 16 tiny, 32 real)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fastest on 2 cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 samples, batch 4, 4 new tokens")
    args = parser.parse_args()
    if args.quick:
        args.n, args.batch_size, args.max_new_tokens = 8, 4, 4
    args.n = args.n or (128 if args.size == "real" else 64)
    args.batch_size = args.batch_size or (32 if args.size == "real" else 16)
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model, processor = build_model(args.size, args.device, dtype, args.seed)
    stops = templates.stop_token_ids(processor.tokenizer, loader.model_family(model))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        samples = make_samples(write_images(folder, 32, 64, args.seed), args.n, args.seed)
        config = collate.CollateConfig(image_root=folder)
        collator = collate.Collator(processor, config, prompt_only=True, cache_mb=0)
        warm = samples[:2]
        loop_one_at_a_time(model, processor, warm, config, stops, 2)
        generate.predict(model, warm, folder / "warm.jsonl", collator, processor.tokenizer, stops, 2, 2,
                          progress=False)
        loop, loop_s = timed(lambda: loop_one_at_a_time(model, processor, samples, config, stops,
                                                        args.max_new_tokens), args.device)
        table, batch_s = timed(lambda: generate.predict(
            model, samples, folder / "batched.jsonl", collator, processor.tokenizer, stops, args.batch_size,
            args.max_new_tokens, False), args.device)
    same = sum(a == b for a, b in zip(loop, table["prediction"]))
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {args.threads} thread(s)"
    print(f"model: {args.size} LLaVA-interleave + random LoRA, {str(dtype).replace('torch.', '')}, {device}")
    print(f"{args.n} samples, 2 images each, greedy, max_new_tokens={args.max_new_tokens}")
    print(f"{'method':34s} {'seconds':>9s} {'samples/s':>10s}")
    print(f"{'loop, generate per sample':34s} {loop_s:9.2f} {args.n / loop_s:10.2f}")
    print(f"{f'batched predict, batch {args.batch_size}':34s} {batch_s:9.2f} {args.n / batch_s:10.2f}")
    print(f"ratio batched / loop: {loop_s / batch_s:.2f}x; identical answers: {same}/{args.n}")


if __name__ == "__main__":
    main()
