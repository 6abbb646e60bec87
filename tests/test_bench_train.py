"""The training benchmark's data, timing arithmetic, fixed padding, report and one real brainvlm worker run."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from brainvlm.core.paths import PROJECT_ROOT
from brainvlm.data.schema import validate_sample
from brainvlm.model import loader

torch.set_num_threads(1)


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_train", PROJECT_ROOT / "benchmarks" / "bench_train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_train"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


bench = load_bench()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A prepared tiny-size work folder: model, 32 PNGs, 16 samples."""
    folder = tmp_path_factory.mktemp("bench")
    bench.prepare(folder, ["tiny"], 16, seed=0)
    return folder


def test_samples_are_valid_canonical_two_image_comparisons(work):
    samples = json.loads((work / "tiny" / "samples.json").read_text())
    assert len(samples) == 16 and [s["task"] for s in samples[:2]] == ["comparison_categorical",
                                                                       "comparison_numerical"]
    for sample in samples:
        assert validate_sample(sample, image_root=work / "tiny" / "images") == []
        images = [p for t in sample["conversations"] for p in t["content"] if p["type"] == "image"]
        assert len(images) == 2 and images[0] != images[1]
    names = sorted(p.name for p in (work / "tiny" / "images").iterdir())
    assert bench.make_samples(names, 16, seed=0) == samples  # same seed, same samples
    assert bench.make_samples(names, 16, seed=1) != samples


def test_rates_cover_exactly_the_timed_steps():
    clock = bench.StepClock(lambda samples: {"attention_mask": torch.ones(len(samples), 10)})
    for _ in range(5):
        clock([0, 1])
    clock.starts = [0.0, 1.0, 3.0, 6.0, 10.0]
    clock.tokens = [1, 20, 30, 40, 5]
    clock.durations = [0.5, 0.5, 1.0, 1.0, 9.0]
    rates = clock.rates(warmup=1, steps=3, batch_size=2)  # calls 1..4 bound steps 1, 2, 3
    assert rates["seconds"] == 9.0 and rates["samples_per_s"] == pytest.approx(6 / 9)
    assert rates["tokens_per_s"] == pytest.approx(90 / 9) and rates["collate_share"] == pytest.approx(2.5 / 9)
    with pytest.raises(RuntimeError, match="warmup 2 \\+ steps 3 \\+ 1"):
        clock.rates(warmup=2, steps=3, batch_size=2)


def test_fixed_padding_pads_every_batch_to_the_fixed_length(work):
    _, processor = loader.load(work / "tiny" / "model")
    samples = json.loads((work / "tiny" / "samples.json").read_text())
    spec = bench.RunSpec("pad_fixed", "tiny", str(work), pad_length=64)
    length = bench.fixed_length(processor, samples, spec)
    assert length == 512  # the samples are longer than 64 tokens: raised to the next multiple of 512
    batch = bench.brainvlm_collator(processor, spec, length, cache_mb=0)(samples[:3])
    assert batch["input_ids"].shape == (3, 512) and int(batch["attention_mask"].sum()) < 3 * 200
    dynamic = bench.brainvlm_collator(processor, spec)(samples[:3])
    assert torch.equal(batch["labels"][:, :dynamic["labels"].shape[1]], dynamic["labels"])


def result(method: str, samples_per_s: float, size: str = "tiny") -> dict:
    return {"method": method, "size": size, "samples_per_s": samples_per_s, "tokens_per_s": 100 * samples_per_s,
            "peak_rss_mib": 600.0, "rss_before_mib": 400.0, "mean_length": 110.0, "collate_share": 0.2,
            "params": 10 ** 6}


def test_table_reports_ratios_and_targets_from_the_fastest_run():
    runs = [result("brainvlm", 90.0), result("brainvlm", 100.0), result("brainvlm", 20.0),
            result("trl_default", 80.0), result("trl_fast", 95.0)]
    picked = bench.best_runs(runs)
    assert {r["method"]: r["samples_per_s"] for r in picked}["brainvlm"] == 100.0
    assert next(r for r in picked if r["method"] == "brainvlm")["runs"] == [90.0, 100.0, 20.0]
    table = bench.format_table(picked, peak_tflops=None)
    assert "tiny: brainvlm / trl_default = 1.25\n" in table + "\n"  # fp32 against TRL's bf16: shown only
    assert "brainvlm / trl_fast = 1.05 (target >= 1.1) MISSED" in table
    both = bench.format_table(bench.best_runs(runs + [result("brainvlm_bf16", 104.0), result("trl_bf16", 90.0)]),
                              peak_tflops=None)
    assert "tiny: brainvlm_bf16 / trl_default = 1.30 (target >= 1.3) met" in both
    assert "tiny: brainvlm_bf16 / trl_bf16 = 1.16 (target >= 1.1) met" in both
    row = next(line for line in table.splitlines() if line.startswith("tiny  trl_default"))
    assert row.split()[4] == "0.80"  # x brainvlm
    mfu = bench.format_table([result("brainvlm", 100.0)], peak_tflops=1.0).splitlines()[1].split()[-1]
    assert float(mfu) == pytest.approx(100 * 6 * 10 ** 6 * 10_000 / 1e12, abs=0.01)


def test_plan_quick_is_tiny_and_short_and_unknown_names_are_refused():
    quick = bench.plan(bench.parse_args(["--quick"]), "work")
    assert {s.size for s in quick} == {"tiny"} and {(s.steps, s.warmup) for s in quick} == {(3, 1)}
    assert [s.method for s in quick] == list(bench.METHODS) and "brainvlm_bf16" in bench.METHODS
    repeated = bench.plan(bench.parse_args(["--sizes", "tiny,256", "--methods", "brainvlm,pad_fixed",
                                            "--repeats", "2"]), "work")
    assert [(s.size, s.method) for s in repeated[:4]] == [("tiny", "brainvlm"), ("tiny", "pad_fixed"),
                                                         ("256", "brainvlm"), ("256", "pad_fixed")]
    assert len(repeated) == 8
    for bad in (["--sizes", "huge"], ["--methods", "trl_fast"], ["--methods", "brainvlm,sft"]):
        with pytest.raises(SystemExit):
            bench.plan(bench.parse_args(bad), "work")


@pytest.mark.parametrize("method", ["brainvlm", "brainvlm_bf16", "pad_fixed"])
def test_a_worker_trains_and_reports_rates_and_memory(work, method):
    spec = bench.RunSpec(method, "tiny", str(work), steps=2, warmup=1, threads=1)
    out = bench.run_worker(spec)
    assert out["method"] == method and out["samples_per_s"] > 0 and out["tokens_per_s"] > out["samples_per_s"]
    assert 0 < out["collate_share"] < 1 and out["peak_rss_mib"] >= out["rss_before_mib"] > 0
    assert 80 < out["mean_length"] < 140  # non-pad tokens per sample: 2 x 16 image tokens plus the text
