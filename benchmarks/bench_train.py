"""Training samples/s and tokens/s: brainvlm's collator + fit vs TRL's SFTTrainer vs a pad-to-fixed-length loop.

Every method trains the same LoRA adapter (``brainvlm.model.lora.add_lora``, r=8, language-model projections
plus projector and final norm) on the same model and the same 2-image comparison conversations (PNG images
read from disk), batch 8:

    brainvlm          ``training.fit`` with a ``collate.Collator`` (dynamic padding, assistant-only labels,
                      encoded samples kept in memory across epochs)
    brainvlm_nocache  the same with the Collator's cache off (every step loads images and renders the template)
    brainvlm_bf16     the same with ``TrainConfig(precision="bf16")`` (bf16 autocast; TRL's default precision)
    trl_default       TRL ``SFTTrainer`` VLM path with its defaults: bf16 autocast + gradient checkpointing
    trl_fast          TRL ``SFTTrainer`` with gradient checkpointing off, in brainvlm's precision
                      (fp32 on CPU, bf16 on CUDA)
    trl_bf16          TRL ``SFTTrainer`` in bf16 with gradient checkpointing off
    pad_fixed         a plain loop padding every sample to a fixed length (``--pad-length``, default 512)

Each method runs in its own subprocess (so peak memory does not mix), with the same torch thread count,
``--warmup`` untimed steps and then ``--steps`` timed steps. A step's time runs from one collator call to the
next, so it holds collation, forward, backward and the optimizer step. Tokens are non-pad tokens (image
tokens included). Before timing, TRL's collator is checked to give the same input ids, labels and pixels as
brainvlm's on the same samples. With ``--repeats`` the methods run round robin and each one's fastest run is kept
(other work on a shared machine only slows runs down).

    python benchmarks/bench_train.py                       # tiny and hidden-256 sizes, 40 timed steps
    python benchmarks/bench_train.py --quick               # smoke run: 3 steps at the tiny size
    python benchmarks/bench_train.py --device cuda --size real --peak-tflops 989   # GPU: bf16, adds MFU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("brainvlm", "brainvlm_nocache", "brainvlm_bf16", "trl_default", "trl_fast", "trl_bf16", "pad_fixed")
SIZES = {"tiny": {"hidden": 64, "layers": 2}, "256": {"hidden": 256, "layers": 4}, "real": {"size": "real"}}
# (numerator, denominator, least ratio of their samples/s or None to only show it). Targets compare equal
# precision: TRL's defaults train in bf16, so brainvlm_bf16 is set against them; brainvlm's own default
# (fp32 on CPU) against TRL's defaults is shown beside it.
TARGETS = (("brainvlm_bf16", "trl_default", 1.3), ("brainvlm", "trl_default", None),
           ("brainvlm", "trl_fast", 1.1), ("brainvlm_bf16", "trl_bf16", 1.1))
BATCH_SIZE = 8
N_SUBJECTS = 32
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@dataclass
class RunSpec:
    """One method at one model size, as handed to a worker subprocess."""

    method: str
    size: str
    work_dir: str
    steps: int = 40
    warmup: int = 5
    pad_length: int = 512
    threads: int = 2
    device: str = "cpu"
    lr: float = 1.0e-4
    seed: int = 0

    @property
    def precision(self) -> str:
        """brainvlm's precision: fp32 on CPU (its default), bf16 on CUDA."""
        return "bf16" if self.device == "cuda" else "fp32"

    @property
    def total_steps(self) -> int:
        """Warm-up + timed steps + one more, whose collator call closes the last timed step."""
        return self.warmup + self.steps + 1

    def folder(self, name: str) -> Path:
        return Path(self.work_dir) / self.size / name


# ------------------------------------------------------------------------------------------------- data


def write_images(folder: Path, n: int, pixels: int, seed: int) -> list[str]:
    """Write ``n`` RGB PNGs (a bright disc of random size and gain on noise); returns their file names."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[:pixels, :pixels] / pixels - 0.5
    names = []
    for i in range(n):
        disc = (x ** 2 + y ** 2 < rng.uniform(0.08, 0.16)) * rng.uniform(120, 200)
        gray = np.clip(disc + rng.normal(20, 10, (pixels, pixels)), 0, 255).astype(np.uint8)
        names.append(f"sub-{i:04d}.png")
        Image.fromarray(np.stack([gray] * 3, axis=-1)).save(folder / names[-1])
    return names


def _turn(role: str, text: str, image: str | None = None) -> dict:
    content = [{"type": "text", "text": text}]
    if image is not None:
        content.append({"type": "image", "modality": "sMRI", "image_path": image})
    return {"role": role, "content": content}


def _question(rng: np.random.Generator, categorical: bool) -> tuple[str, str, str, Any]:
    """(reference text, question, answer, target) of a sex or a BMI comparison."""
    if categorical:
        ref_sex, sex = (str(s) for s in rng.choice(["male", "female"], size=2))
        return (f"Here is a T1-weighted scan of a {ref_sex} participant (reference).", "What is the sex?",
                f"Based on the comparison, the subject is {sex}.", sex)
    ref_bmi, bmi = np.round(rng.uniform(17, 35, size=2), 1).tolist()
    side = "higher" if bmi > ref_bmi else "lower"
    return (f"Here is a brain scan from a participant with BMI {ref_bmi} (reference).", "What is the BMI?",
            f"Based on the comparison, the value is {bmi}, {side} than the reference.", bmi)


def make_samples(images: list[str], n: int, seed: int) -> list[dict]:
    """``n`` canonical comparison samples, alternately sex and BMI, each a reference and a query image."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        ref, query = rng.choice(len(images), size=2, replace=False).tolist()
        categorical = i % 2 == 0
        intro, question, answer, target = _question(rng, categorical)
        conversation = [_turn("user", intro, images[ref]),
                        _turn("assistant", "Understood. I've analyzed the reference scan."),
                        _turn("user", f"Compare this scan with the reference. {question}", images[query]),
                        _turn("assistant", answer)]
        metadata = {"split": "train", "domain": "brain", "target": target, "query_subject": Path(images[query]).stem,
                    "reference_subjects": [Path(images[ref]).stem], "target_col": "sex" if categorical else "BMI"}
        kind = "categorical" if categorical else "numerical"
        samples.append({"id": f"bench_{kind}_comparison_train_{i:06d}", "task": f"comparison_{kind}",
                        "conversations": conversation, "metadata": metadata})
    return samples


def prepare(work: Path, sizes: list[str], n_samples: int, seed: int) -> None:
    """Write each size's model, PNG images at its image size and the samples under ``work/<size>/``."""
    from brainvlm.model.tiny import build_tiny_model

    for size in sizes:
        model_dir = build_tiny_model(work / size / "model", seed=seed, **SIZES[size])
        pixels = json.loads((model_dir / "config.json").read_text())["vision_config"]["image_size"]
        names = write_images(work / size / "images", N_SUBJECTS, pixels, seed)
        (work / size / "samples.json").write_text(json.dumps(make_samples(names, n_samples, seed), sort_keys=True))


# ---------------------------------------------------------------------------------------------- methods


class StepClock:
    """Wraps a collator: records when each call starts, how long it takes and its non-pad token count."""

    def __init__(self, collate: Callable[[list], Any]) -> None:
        self.collate = collate
        self.starts: list[float] = []
        self.durations: list[float] = []
        self.tokens: list[int] = []

    def __call__(self, samples: list) -> Any:
        self.starts.append(time.perf_counter())
        batch = self.collate(samples)
        self.durations.append(time.perf_counter() - self.starts[-1])
        self.tokens.append(int(batch["attention_mask"].sum()))
        return batch

    def rates(self, warmup: int, steps: int, batch_size: int) -> dict[str, float]:
        """Samples/s, tokens/s and collation's share over calls ``warmup`` .. ``warmup + steps``."""
        if len(self.starts) < warmup + steps + 1:
            raise RuntimeError(f"the collator ran {len(self.starts)} times; timing needs warmup {warmup} + "
                               f"steps {steps} + 1 calls")
        seconds = self.starts[warmup + steps] - self.starts[warmup]
        tokens = sum(self.tokens[warmup:warmup + steps])
        collate = sum(self.durations[warmup:warmup + steps])
        return {"seconds": seconds, "samples_per_s": steps * batch_size / seconds, "tokens_per_s": tokens / seconds,
                "collate_share": collate / seconds}


def brainvlm_collator(processor: Any, spec: RunSpec, pad_length: int | None = None, cache_mb: float = 256.0) -> Any:
    """brainvlm's Collator on the run's images; ``pad_length`` pads every batch to exactly that length."""
    from brainvlm.model.collate import CollateConfig, Collator

    config = CollateConfig(image_root=spec.folder("images"), max_length=pad_length, pad_to_multiple_of=pad_length)
    return Collator(processor, config, cache_mb=cache_mb)


def run_brainvlm(model: Any, processor: Any, samples: list[dict], spec: RunSpec, cache: bool = True,
                 precision: str | None = None) -> StepClock:
    """``training.fit`` over one stage of ``total_steps`` steps with a ``Collator``; precision defaults to spec's."""
    from brainvlm.train.config import Stage, TrainConfig
    from brainvlm.train.fit import fit

    clock = StepClock(brainvlm_collator(processor, spec, cache_mb=256.0 if cache else 0.0))
    config = TrainConfig(output_dir=str(spec.folder(f"out_{spec.method}")), lr=spec.lr, batch_size=BATCH_SIZE,
                         precision=precision or spec.precision, progress=False, seed=spec.seed)
    fit(model, clock, [Stage("bench", train=samples, max_steps=spec.total_steps)], config)
    return clock


def fixed_length(processor: Any, samples: list[dict], spec: RunSpec) -> int:
    """``spec.pad_length``, raised to the longest sample rounded up to a multiple of 512 if that is longer."""
    from brainvlm.model.collate import token_lengths

    longest = max(token_lengths(samples, processor, brainvlm_collator(processor, spec).config))
    return max(spec.pad_length, math.ceil(longest / 512) * 512)


def run_pad_fixed(model: Any, processor: Any, samples: list[dict], spec: RunSpec) -> StepClock:
    """A plain loop: every sample padded to one fixed length, the model's own mean loss, AdamW."""
    import torch

    from brainvlm.model.collate import model_inputs
    from brainvlm.train.fit import autocast

    clock = StepClock(brainvlm_collator(processor, spec, fixed_length(processor, samples, spec), cache_mb=0.0))
    device = torch.device(spec.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.lr)
    order = np.random.default_rng(spec.seed).permutation(len(samples)).tolist()
    model.train()
    for step in range(spec.total_steps):
        batch = clock([samples[order[(step * BATCH_SIZE + k) % len(order)]] for k in range(BATCH_SIZE)])
        with autocast(spec.precision, device):
            loss = model(**model_inputs(batch, device), labels=batch["labels"].to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return clock


def trl_dataset(samples: list[dict], image_root: Path) -> Any:
    """The samples as TRL takes them: ``messages`` with image placeholders, ``images`` decoded from disk."""
    import datasets

    rows = []
    for sample in samples:
        messages, images = [], []
        for turn in sample["conversations"]:
            parts = []
            for part in turn["content"]:
                if part["type"] == "image":
                    parts.append({"type": "image", "text": None})
                    images.append(str(image_root / part["image_path"]))
                else:
                    parts.append({"type": "text", "text": part["text"]})
            messages.append({"role": turn["role"], "content": parts})
        rows.append({"messages": messages, "images": images})
    return datasets.Dataset.from_list(rows).cast_column("images", datasets.List(datasets.Image()))


def check_same_batches(theirs: Callable, dataset: Any, processor: Any, samples: list[dict], spec: RunSpec) -> None:
    """Raise unless TRL's collator and brainvlm's give the same ids, mask, labels and pixels on one batch."""
    import torch

    a = brainvlm_collator(processor, spec, cache_mb=0.0)(samples[:BATCH_SIZE])
    b = theirs([dataset[i] for i in range(BATCH_SIZE)])
    differ = [k for k in ("input_ids", "attention_mask", "labels", "pixel_values")
              if a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]
    if differ:
        raise RuntimeError(f"TRL's and brainvlm's batches of samples 0-{BATCH_SIZE - 1} differ in {differ} "
                           f"(shapes {[tuple(a[k].shape) for k in differ]} vs {[tuple(b[k].shape) for k in differ]})")


def run_trl(model: Any, processor: Any, samples: list[dict], spec: RunSpec, defaults: bool,
            bf16: bool | None = None) -> StepClock:
    """TRL ``SFTTrainer`` on the same LoRA model; ``defaults`` keeps bf16 + gradient checkpointing, else
    checkpointing is off and precision is ``bf16`` (None: brainvlm's precision)."""
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    collator = DataCollatorForVisionLanguageModeling(processor, assistant_only_loss=True)
    dataset = trl_dataset(samples, spec.folder("images"))
    check_same_batches(collator, dataset, processor, samples, spec)
    clock = StepClock(collator)
    bf16 = spec.precision == "bf16" if bf16 is None else bf16
    changed = {} if defaults else {"bf16": bf16, "gradient_checkpointing": False}
    args = SFTConfig(output_dir=str(spec.folder(f"out_{spec.method}")), max_steps=spec.total_steps,
                     per_device_train_batch_size=BATCH_SIZE, learning_rate=spec.lr, max_length=None,
                     assistant_only_loss=True, use_cpu=spec.device == "cpu", report_to="none",
                     save_strategy="no", disable_tqdm=True, dataloader_drop_last=True, seed=spec.seed, **changed)
    SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
               data_collator=clock).train()
    return clock


# ----------------------------------------------------------------------------------------------- worker


def rss_mib() -> float:
    """Current resident set size of this process, MiB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_rss_mib() -> float:
    """Peak resident set size so far, MiB. The kernel updates its high-water mark (``ru_maxrss``) lazily, so
    it can read a little below the current size: the larger of the two is the peak."""
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_mib())


RUNNERS: dict[str, Callable[..., StepClock]] = {
    "brainvlm": run_brainvlm,
    "brainvlm_nocache": lambda *a: run_brainvlm(*a, cache=False),
    "brainvlm_bf16": lambda *a: run_brainvlm(*a, precision="bf16"),
    "trl_default": lambda *a: run_trl(*a, defaults=True),
    "trl_fast": lambda *a: run_trl(*a, defaults=False),
    "trl_bf16": lambda *a: run_trl(*a, defaults=False, bf16=True),
    "pad_fixed": run_pad_fixed,
}


def run_worker(spec: RunSpec) -> dict[str, Any]:
    """Load the model, add LoRA, train with ``spec.method``; returns rates, memory and parameter count."""
    import torch

    from brainvlm.model.loader import load
    from brainvlm.model.lora import add_lora

    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    model, processor = load(spec.folder("model"))
    model = add_lora(model, r=8, seed=spec.seed).to(spec.device)
    samples = json.loads(spec.folder("samples.json").read_text())
    before = rss_mib()
    if spec.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    clock = RUNNERS[spec.method](model, processor, samples, spec)
    result = clock.rates(spec.warmup, spec.steps, BATCH_SIZE)
    result.update(method=spec.method, size=spec.size, rss_before_mib=before,
                  peak_rss_mib=peak_rss_mib(),
                  params=sum(p.numel() for p in model.parameters()),
                  mean_length=float(np.mean(clock.tokens)) / BATCH_SIZE)
    if spec.device == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return result


def launch(spec: RunSpec) -> dict[str, Any]:
    """Run one method in a fresh interpreter; returns the JSON result it prints last."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(asdict(spec))]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **OFFLINE},
                          check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"{spec.method} at size {spec.size} failed (exit {done.returncode}):\n"
                           f"{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- report


def best_runs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (size, method), the fastest run, with every run's samples/s under ``runs``.

    Other work on a shared machine only ever slows a run down, so the fastest of several is the best
    estimate of a method's own speed (the convention of Python's ``timeit``).
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for result in results:
        groups.setdefault((result["size"], result["method"]), []).append(result)
    return [{**max(runs, key=lambda r: r["samples_per_s"]), "runs": [r["samples_per_s"] for r in runs]}
            for runs in groups.values()]


def format_row(r: dict[str, Any], base: float, gpu: bool, peak_tflops: float | None) -> str:
    line = (f"{r['size']:<6}{r['method']:<18}{r['samples_per_s']:>10.1f}{r['tokens_per_s']:>10,.0f}"
            f"{r['samples_per_s'] / base:>11.2f}{r['peak_rss_mib']:>13,.0f}"
            f"{r['peak_rss_mib'] - r['rss_before_mib']:>11,.0f}{r['mean_length']:>11.1f}"
            f"{100 * r['collate_share']:>10.0f}")
    line += f"{r.get('peak_gpu_mib', 0):>9,.0f}" * gpu
    if peak_tflops is not None:  # 6 * N * tokens/s: forward and backward FLOPs per token of every parameter
        line += f"{100 * 6 * r['params'] * r['tokens_per_s'] / (peak_tflops * 1e12):>7.2f}"
    return line + ("   " + " ".join(f"{v:.1f}" for v in r["runs"]) if len(r.get("runs", [])) > 1 else "")


def format_table(results: list[dict[str, Any]], peak_tflops: float | None) -> str:
    """Samples/s, tokens/s, ratio to brainvlm, memory (and MFU) per size and method, then the targets."""
    gpu = any("peak_gpu_mib" in r for r in results)
    header = (f"{'size':<6}{'method':<18}{'samples/s':>10}{'tokens/s':>10}{'x brainvlm':>11}{'peak RSS MiB':>13}"
              f"{'+train MiB':>11}{'tok/sample':>11}{'collate %':>10}" + f"{'GPU MiB':>9}" * gpu
              + f"{'MFU %':>7}" * (peak_tflops is not None))
    if any(len(r.get("runs", [])) > 1 for r in results):
        header += "   samples/s of each run"
    lines, checks = [header], []
    for size in dict.fromkeys(r["size"] for r in results):
        rows = {r["method"]: r for r in results if r["size"] == size}
        base = rows["brainvlm"]["samples_per_s"]
        lines += [format_row(rows[m], base, gpu, peak_tflops) for m in METHODS if m in rows]
        for mine, theirs, target in TARGETS:
            if mine in rows and theirs in rows:
                ratio = rows[mine]["samples_per_s"] / rows[theirs]["samples_per_s"]
                verdict = "" if target is None else f" (target >= {target}) {'met' if ratio >= target else 'MISSED'}"
                checks.append(f"{size}: {mine} / {theirs} = {ratio:.2f}{verdict}")
    return "\n".join(lines + [""] + checks)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,256", help=f"comma-separated, from {sorted(SIZES)}")
    parser.add_argument("--size", help="one size (instead of --sizes), e.g. --size real on a GPU")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset (brainvlm required)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    parser.add_argument("--repeats", type=int, default=1, help="runs per method (round robin); the fastest is kept")
    parser.add_argument("--samples", type=int, default=128, help="training samples (later epochs repeat them)")
    parser.add_argument("--pad-length", type=int, default=512, help="fixed length of the pad_fixed loop")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every method")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--peak-tflops", type=float, help="accelerator peak TFLOP/s (bf16 dense): adds MFU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny size, 1 warm-up + 3 timed steps")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def plan(args: argparse.Namespace, work_dir: str) -> list[RunSpec]:
    """The runs, round robin over repeats; raises SystemExit on unknown sizes or methods."""
    sizes = [args.size] if args.size else (["tiny"] if args.quick else args.sizes.split(","))
    steps, warmup = (3, 1) if args.quick else (args.steps, args.warmup)
    methods = args.methods.split(",")
    unknown = sorted(set(sizes) - set(SIZES)) + sorted(set(methods) - set(METHODS))
    if unknown or "brainvlm" not in methods or steps < 1 or warmup < 0 or args.repeats < 1:
        raise SystemExit(f"unknown sizes/methods {unknown}; sizes {sorted(SIZES)}, methods {list(METHODS)} "
                         "(brainvlm is required: ratios are to it); --steps and --repeats >= 1, --warmup >= 0")
    return [RunSpec(method, size, work_dir, steps, warmup, args.pad_length, args.threads, args.device, seed=args.seed)
            for _ in range(args.repeats) for size in sizes for method in methods]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(RunSpec(**json.loads(args.worker))), sort_keys=True))
        return
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        specs = plan(args, tmp)
        sizes = list(dict.fromkeys(s.size for s in specs))
        start = time.perf_counter()
        prepare(Path(tmp), sizes, args.samples, args.seed)
        epochs = specs[0].total_steps * BATCH_SIZE / args.samples
        print(f"built {len(sizes)} model(s) and {args.samples} samples in {time.perf_counter() - start:.1f} s; "
              f"batch {BATCH_SIZE}, {specs[0].warmup} warm-up + {specs[0].steps} timed steps ({epochs:.1f} epochs), "
              f"{args.threads} torch threads, {args.device}, {args.repeats} run(s) per method")
        results = [launch(spec) for spec in specs]
    print(format_table(best_runs(results), args.peak_tflops))


if __name__ == "__main__":
    main()
