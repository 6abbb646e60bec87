"""Batched, resumable generation: batched equals one-at-a-time with a trained adapter, family stop tokens,
a SIGKILLed run resumed to the uninterrupted file byte for byte, and the resume rules for any kill point."""

from __future__ import annotations

import collections
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from brainvlm.app.commands import predict
from brainvlm.app.params import complete_params, find_notebook, read_params
from brainvlm.app.runner import run
from brainvlm.core import jsonio
from brainvlm.core.paths import PARAMS_DIR, PROJECT_ROOT
from brainvlm.data import dataset
from brainvlm.eval import generate
from brainvlm.model import collate, loader, templates
from brainvlm.studies import brain

SEX_ANSWER = re.compile(r"^Based on the comparison, the participant is (male|female)\.$")
# ~4 s at ci size, after which the answers follow the template (logits far from flat)
TRAIN_OVERRIDES = {"brain_epochs": 60.0, "brain_save_every": 0, "brain_eval_every": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ci-size run (notebook 01 only) with a sex adapter trained until its answers follow the template."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: two spinning threads are slower than one
    reports = tmp_path_factory.mktemp("reports")
    run(PARAMS_DIR / "ci.yaml", run_name="inference", reports_dir=reports, only="01")
    run_dir = reports / "inference"
    params = complete_params(find_notebook(brain.TRAIN_NOTEBOOK), {**read_params(PARAMS_DIR / "ci.yaml"), **TRAIN_OVERRIDES})
    brain.train(params, "sex", run_dir, progress=False)
    model, processor, settings_ = brain.load_trained(run_dir, "sex")
    manifest = dataset.read_manifest(run_dir)
    samples = {name: jsonio.read_jsonl(manifest["tasks"][name]["files"]["test"]) for name in ("sex", "bmi")}
    config = brain.collate_config(settings_, manifest["image_root"])
    collator = collate.Collator(processor, config, prompt_only=True)
    stops = templates.stop_token_ids(processor.tokenizer, loader.model_family(model))
    yield {"run_dir": run_dir, "model": model, "processor": processor, "samples": samples,
           "collator": collator, "stops": stops}
    torch.set_num_threads(threads)


def _predict(t: dict, samples: list[dict], out: Path, batch_size: int, **kwargs) -> list[str]:
    table = generate.predict(t["model"], samples, out, t["collator"], t["processor"].tokenizer, t["stops"],
                              batch_size=batch_size, max_new_tokens=24, progress=False, **kwargs)
    return list(table["prediction"])


def test_batched_greedy_output_equals_one_at_a_time(trained, tmp_path):
    samples = trained["samples"]["sex"] + trained["samples"]["bmi"]  # sex and bmi prompts differ in length
    lengths = trained["collator"](samples[:16])["attention_mask"].sum(dim=1)
    assert lengths.min() < lengths.max(), "without left padding in the batches this test shows nothing"
    one = _predict(trained, samples, tmp_path / "one.jsonl", batch_size=1)
    eight = _predict(trained, samples, tmp_path / "eight.jsonl", batch_size=8)
    assert eight == one
    assert (tmp_path / "eight.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    sex = one[:len(trained["samples"]["sex"])]
    assert all(SEX_ANSWER.match(p) for p in sex), f"the adapter is not trained (logits near flat): {sex[:3]}"


def test_left_padded_rows_score_like_unpadded_ones(trained):
    samples = trained["samples"]["sex"][:2] + trained["samples"]["bmi"][:2]
    batch = trained["collator"](samples)

    def first_scores(b: dict) -> torch.Tensor:
        out = trained["model"].generate(**collate.model_inputs(b), max_new_tokens=1, do_sample=False,
                                        output_scores=True, return_dict_in_generate=True,
                                        pad_token_id=trained["processor"].tokenizer.pad_token_id)
        return out.scores[0]

    with torch.no_grad():
        padded = first_scores(batch)
        for row, sample in enumerate(samples):
            alone = first_scores(trained["collator"]([sample]))[0]
            gap = (padded[row] - alone).abs().max()
            assert gap < 1e-4, (sample["id"], gap)
            assert alone.std() > 0.1, "near-flat logits cannot show a padding error"


def test_generation_stops_at_the_family_end_of_turn(trained):
    tokenizer = trained["processor"].tokenizer
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in trained["stops"]
    batch = trained["collator"](trained["samples"]["sex"][:4])
    stopped = generate.generate_batch(trained["model"], batch, tokenizer, trained["stops"], 40)
    assert all(SEX_ANSWER.match(text) for text in stopped), stopped
    running_on = generate.generate_batch(trained["model"], batch, tokenizer, [tokenizer.pad_token_id],
                                          max_new_tokens=40)
    assert all(len(b) > len(a) and b.startswith(a) for a, b in zip(stopped, running_on)), running_on


def test_sampling_repeats_with_its_seed_and_changes_with_another(trained, tmp_path):
    samples = trained["samples"]["bmi"]
    kwargs = {"do_sample": True, "temperature": 3.0}
    first = _predict(trained, samples, tmp_path / "a.jsonl", batch_size=4, seed=1, **kwargs)
    again = _predict(trained, samples, tmp_path / "b.jsonl", batch_size=4, seed=1, **kwargs)
    other = _predict(trained, samples, tmp_path / "c.jsonl", batch_size=4, seed=2, **kwargs)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert first == again and first != other


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_sigkilled_run_resumes_to_the_uninterrupted_file(trained, tmp_path):
    run_dir, out = trained["run_dir"], tmp_path / "killed.jsonl"
    n_samples = len(jsonio.read_jsonl(dataset.read_manifest(run_dir)["tasks"]["sex"]["files"]["train"]))
    command = [sys.executable, "-m", "brainvlm", "predict", "--run-dir", str(run_dir), "--task", "sex",
               "--split", "train", "--batch-size", "2", "--out", str(out), "--threads", "1", "--no-progress"]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if out.is_file() and out.read_bytes().count(b"\n") >= 1:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    written = len(_lines(out))
    assert 1 <= written < n_samples, f"the kill came after {written} of {n_samples} lines"

    config = generate.GenerationConfig(batch_size=2)
    resumed = brain.predict_task(run_dir, "sex", "train", config, out_path=out, progress=False)
    reference = tmp_path / "uninterrupted.jsonl"
    brain.predict_task(run_dir, "sex", "train", config, out_path=reference, progress=False)
    ids = [json.loads(line)["id"] for line in _lines(out)]
    assert len(ids) == n_samples and set(collections.Counter(ids).values()) == {1}
    assert out.read_bytes() == reference.read_bytes()
    assert list(resumed["id"]) == ids


# ------------------------------------------------------------------ resume rules with a stand-in model


class StandInTokenizer:
    """Token ids as text: enough for ``generate_batch``'s decoding."""

    pad_token_id = 0

    def batch_decode(self, rows: list[list[int]], skip_special_tokens: bool = True) -> list[str]:
        return [" ".join(str(t) for t in row if t != self.pad_token_id) for row in rows]


class StandInModel(torch.nn.Module):
    """Answers depend on the prompt only (greedy) or also on torch's RNG (sampling), like a real model."""

    STOP = 1

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def generate(self, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, do_sample=False,
                 use_cache=True, **sampling):
        total = (input_ids * attention_mask).sum(dim=1, keepdim=True)
        new = (total + torch.arange(2, 2 + max_new_tokens)) % 97 + 2
        if do_sample:
            new = new + torch.randint(0, 1000, new.shape)
        new[:, 3] = self.STOP
        new[:, 4:] = pad_token_id
        return torch.cat([input_ids, new], dim=1)


class Crash(RuntimeError):
    pass


class StandInCollator:
    """Left-padded token batches from sample ids; raises ``Crash`` at call ``crash_at`` (a kill)."""

    def __init__(self, crash_at: int | None = None, drop: frozenset = frozenset()) -> None:
        self.calls, self.crash_at, self.drop = 0, crash_at, drop

    def __call__(self, samples: list[dict]) -> dict | None:
        if self.calls == self.crash_at:
            raise Crash
        self.calls += 1
        kept = [s for s in samples if s["id"] not in self.drop]
        if not kept:
            return None
        tokens = [[3 + (ord(c) % 50) for c in s["id"]] for s in kept]
        longest = max(len(t) for t in tokens)
        return {"input_ids": torch.tensor([[0] * (longest - len(t)) + t for t in tokens]),
                "attention_mask": torch.tensor([[0] * (longest - len(t)) + [1] * len(t) for t in tokens]),
                "ids": [s["id"] for s in kept]}


def _stand_in_predict(samples, out, collator, batch_size, sampling) -> list:
    table = generate.predict(StandInModel(), samples, out, collator, StandInTokenizer(), [StandInModel.STOP],
                              batch_size=batch_size, max_new_tokens=6, progress=False, seed=3, **sampling)
    return list(table["prediction"])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 25), batch_size=st.integers(1, 6), crash_at=st.integers(0, 25),
       torn=st.binary(max_size=30), do_sample=st.booleans())
def test_any_kill_point_resumes_to_the_uninterrupted_file(tmp_path_factory, n, batch_size, crash_at, torn,
                                                          do_sample):
    folder = tmp_path_factory.mktemp("resume")
    samples = [{"id": f"s{i:03d}x{'y' * (i % 4)}"} for i in range(n)]
    sampling = {"do_sample": True} if do_sample else {}
    _stand_in_predict(samples, folder / "whole.jsonl", StandInCollator(), batch_size, sampling)
    try:
        _stand_in_predict(samples, folder / "cut.jsonl", StandInCollator(crash_at), batch_size, sampling)
    except Crash:
        with open(folder / "cut.jsonl", "ab") as handle:  # a kill inside a write leaves a torn line
            handle.write(torn.replace(b"\n", b""))
    predictions = _stand_in_predict(samples, folder / "cut.jsonl", StandInCollator(), batch_size, sampling)
    assert (folder / "cut.jsonl").read_bytes() == (folder / "whole.jsonl").read_bytes()
    ids = [json.loads(line)["id"] for line in _lines(folder / "cut.jsonl")]
    assert ids == [s["id"] for s in samples] and all(p for p in predictions)


def test_rows_are_keyed_by_the_batch_ids_when_the_collator_drops_a_sample(tmp_path):
    samples = [{"id": f"s{i}"} for i in range(5)]
    others = [s for s in samples if s["id"] != "s1"]
    kept = _stand_in_predict(others, tmp_path / "kept.jsonl", StandInCollator(), 8, {})
    dropping = StandInCollator(drop=frozenset({"s1"}))
    dropped = _stand_in_predict(samples, tmp_path / "out.jsonl", dropping, 8, {})
    assert dropped == [kept[0], None, *kept[1:]]
    assert [json.loads(line)["id"] for line in _lines(tmp_path / "out.jsonl")] == ["s0", "s2", "s3", "s4"]


@given(n=st.integers(0, 40), batch_size=st.integers(1, 9), done=st.sets(st.integers(0, 39)))
def test_pending_batches_keep_the_grid_and_cover_every_open_sample(n, batch_size, done):
    ids = [f"id{i}" for i in range(n)]
    done_ids = {f"id{i}" for i in done}
    batches = generate.pending_batches(ids, done_ids, batch_size)
    positions = [p for _, group in batches for p in group]
    assert positions == [i for i in range(n) if ids[i] not in done_ids]
    assert all(k * batch_size <= p < (k + 1) * batch_size for k, group in batches for p in group)


@given(tokens=st.lists(st.integers(0, 9), max_size=20),
       stops=st.lists(st.integers(0, 9), min_size=1, max_size=3))
def test_cut_at_stop_keeps_the_prefix_before_the_first_stop(tokens, stops):
    cut = generate.cut_at_stop(tokens, stops)
    assert tokens[:len(cut)] == cut and not set(cut) & set(stops)
    assert len(cut) == len(tokens) or tokens[len(cut)] in stops


def test_duplicate_ids_and_right_padding_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"duplicate sample ids \['a'\]"):
        samples = [{"id": "a"}, {"id": "b"}, {"id": "a"}]
        _stand_in_predict(samples, tmp_path / "p.jsonl", StandInCollator(), 2, {})
    batch = {"input_ids": torch.tensor([[5, 6], [5, 0]]), "attention_mask": torch.tensor([[1, 1], [1, 0]])}
    with pytest.raises(ValueError, match="left padding"):
        generate.generate_batch(StandInModel(), batch, StandInTokenizer(), [StandInModel.STOP])


def test_torn_line_is_cut_and_duplicated_ids_are_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": "a", "prediction": "x"}\n{"id": "b", "predic')
    generate.repair_jsonl(path)
    assert generate.read_predictions(path) == {"a": "x"}
    path.write_text('{"id": "a", "prediction": "x"}\n{"id": "a", "prediction": "y"}\n')
    with pytest.raises(ValueError, match="'a' appears on lines 1 and 2"):
        generate.read_predictions(path)


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("max_new_tokens", -1), ("batch_size", 2.0)])
def test_generation_config_refuses_bad_sizes(field, value):
    with pytest.raises(ValueError, match=f"GenerationConfig.{field}"):
        generate.GenerationConfig(**{field: value})


def test_cli_names_an_unknown_task(trained, capsys):
    assert predict.main(["--run-dir", str(trained["run_dir"]), "--task", "age"]) == 1
    assert "task 'age' is not in" in capsys.readouterr().err


def test_predictions_of_another_config_or_adapter_are_not_resumed(trained, tmp_path):
    run_dir, out = trained["run_dir"], tmp_path / "p.jsonl"
    short = generate.GenerationConfig(batch_size=8, max_new_tokens=3)
    brain.predict_task(run_dir, "sex", "test", short, out_path=out, progress=False)
    clipped = out.read_bytes()
    with pytest.raises(ValueError, match="generated from another generation"):
        brain.predict_task(run_dir, "sex", "test", generate.GenerationConfig(batch_size=8), out_path=out,
                               on_change="error", progress=False)
    assert out.read_bytes() == clipped
    full = brain.predict_task(run_dir, "sex", "test", generate.GenerationConfig(batch_size=8),
                                  out_path=out, progress=False)
    assert all(SEX_ANSWER.match(p) for p in full["prediction"]) and out.read_bytes() != clipped
    record = json.loads((tmp_path / "p.meta.json").read_text())
    assert record["generation"]["max_new_tokens"] == 24 and len(record["adapter_sha256"]) == 64
    retrained = run_dir / "models" / "sex_retrained"
    shutil.copytree(run_dir / "models" / "sex", retrained, dirs_exist_ok=True)
    (retrained / "adapter" / "adapter_config.json").write_text(
        (retrained / "adapter" / "adapter_config.json").read_text() + "\n")  # other adapter files, in effect
    with pytest.raises(ValueError, match="generated from another adapter, adapter_sha256"):
        brain.predict_task(run_dir, "sex", "test", generate.GenerationConfig(batch_size=8),
                               "sex_retrained", out_path=out, on_change="error", progress=False)
