"""Batched generation with left padding, appended to a JSONL keyed by sample id, resumable after a kill.

Samples are cut into batches on a fixed grid over the sample list (batch ``k`` holds samples
``k*batch_size`` to ``(k+1)*batch_size - 1``). Each finished batch is appended as one
``{"id", "prediction"}`` line per sample, in one write that is forced to disk, so a run killed mid-way
loses at most the batch in flight. Re-running reads the ids already written (a torn last line from a
kill is cut off first) and generates only the rest, on the same grid and with the same per-batch
sampling seed, so an interrupted and resumed run writes the same file as an uninterrupted one.

Two options of ``predict`` serve long batch jobs (``studies.clef_jobs``): ``checkpoint_interval`` holds
finished rows back until that many are waiting (a kill then loses at most those and the batch in flight),
and ``on_error`` turns a batch that raises into one call per sample, so an unreadable image or a failing
generation costs only its own sample, which is reported and left unanswered (a rerun tries it again).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from brainvlm.core.jsonio import append_jsonl, read_json, write_json
from brainvlm.eval.evaluate import load_predictions

# notebook 07 and ``python -m brainvlm predict`` share predictions/07_<task>_<split>.jsonl
PREDICTIONS_PREFIX = "07"


@dataclass
class GenerationConfig:
    """How answers are generated: greedy unless ``do_sample``.

    Args:
        batch_size: prompts per ``generate`` call, left padded to the longest of them.
        max_new_tokens: longest answer; a row stops earlier at its family's end-of-turn token.
        do_sample: sample instead of decoding greedily (``temperature`` and ``top_p`` then apply).
        seed: sampling seed; batch ``k`` of the grid draws from ``(seed, k)``, so a resumed run repeats it.
    """

    batch_size: int = 16
    max_new_tokens: int = 24
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GenerationConfig.{name}={value!r}: use a positive int")

    def sampling(self) -> dict[str, Any]:
        """The sampling keywords of ``predict`` (none for greedy decoding)."""
        if not self.do_sample:
            return {}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}


def repair_jsonl(path: Path) -> None:
    """Cut a torn final line (no trailing newline, e.g. after a kill) so appends stay valid JSONL."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as handle:
        handle.truncate(keep)


def read_predictions(path: Path) -> dict[str, str]:
    """id -> prediction from a predictions JSONL (empty when there is none yet); see ``evaluate.load_predictions``."""
    return load_predictions(path) if Path(path).is_file() else {}


def append_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append a finished batch's rows in one write, forced to disk (``jsonio.append_jsonl``)."""
    append_jsonl(path, rows)


def cut_at_stop(tokens: list[int], stop_token_ids: list[int]) -> list[int]:
    """The tokens before the first stop token (all of them when none occurs)."""
    stops = set(stop_token_ids)
    for position, token in enumerate(tokens):
        if token in stops:
            return tokens[:position]
    return tokens


@torch.no_grad()
def generate_batch(model, batch: dict[str, Any], tokenizer, stop_token_ids: list[int],
                   max_new_tokens: int = 32, adapter_names: list[str] | None = None, **sampling: Any) -> list[str]:
    """Generate for one left-padded prompt batch (KV cache on); returns the decoded new text of each row.

    Args:
        batch: ``input_ids``, ``attention_mask`` (left padded) and ``pixel_values``.
        stop_token_ids: end-of-turn tokens of the model family; a row stops at the first of them and
            its text ends before it.
        adapter_names: one PEFT adapter name per row (a pool of task adapters answers a mixed batch, each
            row through its own adapter; PEFT's mixed-adapter batches, inference only).
        sampling: passed to ``generate`` (``do_sample``, ``temperature``, ``top_p``); greedy by default.
    """
    if batch["input_ids"].shape[0] > 1 and bool((batch["attention_mask"][:, -1] == 0).any()):
        raise ValueError("generation needs left padding: a prompt ends in padding; build batches with "
                         "collate.Collator(..., prompt_only=True)")
    parameter = next(model.parameters())
    keys = ("input_ids", "attention_mask", "pixel_values")
    inputs = {k: batch[k].to(parameter.device) for k in keys if k in batch}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(parameter.dtype)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_token_ids[0]
    sampling = dict(sampling)
    if adapter_names is not None:
        if len(adapter_names) != batch["input_ids"].shape[0]:
            raise ValueError(f"{len(adapter_names)} adapter names for {batch['input_ids'].shape[0]} prompts")
        sampling["adapter_names"] = list(adapter_names)
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=list(stop_token_ids),
                            pad_token_id=pad_id, do_sample=sampling.pop("do_sample", False), use_cache=True,
                            **sampling)
    new_tokens = output[:, inputs["input_ids"].shape[1]:].tolist()
    rows = [cut_at_stop(tokens, stop_token_ids) for tokens in new_tokens]
    return [text.strip() for text in tokenizer.batch_decode(rows, skip_special_tokens=True)]


def pending_batches(ids: list[str], done: set[str] | dict[str, Any],
                    batch_size: int) -> list[tuple[int, list[int]]]:
    """``(k, positions)`` of each grid batch that still has samples to generate (done ones left out)."""
    batches = []
    for k, first in enumerate(range(0, len(ids), batch_size)):
        positions = [i for i in range(first, min(first + batch_size, len(ids))) if ids[i] not in done]
        if positions:
            batches.append((k, positions))
    return batches


def _check_unique(ids: list[str]) -> None:
    duplicated = sorted(i for i, count in collections.Counter(ids).items() if count > 1)
    if duplicated:
        raise ValueError(f"duplicate sample ids {duplicated[:5]} ({len(duplicated)} in all): predictions are "
                         "keyed by id; give every sample its own id")


def _generate_seeded(model, batch: dict, tokenizer, stop_token_ids: list[int], max_new_tokens: int, seed: int,
                     k: int, sampling: dict[str, Any], adapter_names: list[str] | None = None) -> list[str]:
    """``generate_batch``; a sampled batch draws from its own seed, leaving the caller's RNG untouched."""
    if not sampling.get("do_sample"):
        return generate_batch(model, batch, tokenizer, stop_token_ids, max_new_tokens, adapter_names, **sampling)
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed * 1_000_003 + k)
        return generate_batch(model, batch, tokenizer, stop_token_ids, max_new_tokens, adapter_names, **sampling)


def _answer(model, prompt_collator: Callable[[list[dict]], dict | None], tokenizer, stop_token_ids: list[int],
            max_new_tokens: int, seed: int, sampling: dict[str, Any], adapter_of: Mapping[str, str] | None,
            chosen: list[dict], k: int) -> list[dict[str, Any]]:
    """The ``{"id", "prediction"}`` rows of grid batch ``k`` (none when the collator dropped every sample)."""
    batch = prompt_collator(chosen)
    if batch is None:
        return []
    names = [adapter_of[i] for i in batch["ids"]] if adapter_of is not None else None
    texts = _generate_seeded(model, batch, tokenizer, stop_token_ids, max_new_tokens, seed, k, sampling, names)
    return [{"id": i, "prediction": t} for i, t in zip(batch["ids"], texts)]


def _answer_each(answer: Callable[[list[dict], int], list[dict]], chosen: list[dict], k: int,
                 on_error: Callable[[str, Exception], None]) -> list[dict[str, Any]]:
    """``answer`` for a batch; if that raises, for each sample alone (those that fail go to ``on_error``)."""
    try:
        return answer(chosen, k)
    except Exception as error:  # noqa: BLE001 - any failure: retried sample by sample
        if len(chosen) == 1:
            on_error(str(chosen[0]["id"]), error)
            return []
    rows = []
    for sample in chosen:
        try:
            rows += answer([sample], k)
        except Exception as error:  # noqa: BLE001 - given to on_error; the others go on
            on_error(str(sample["id"]), error)
    return rows


def predict(model, samples: list[dict], out_path: Path, prompt_collator: Callable[[list[dict]], dict | None],
            tokenizer, stop_token_ids: list[int], batch_size: int = 16, max_new_tokens: int = 32,
            progress: bool = True, seed: int = 0, checkpoint_interval: int | None = None,
            on_error: Callable[[str, Exception], None] | None = None, adapter_of: Mapping[str, str] | None = None,
            **sampling: Any) -> pd.DataFrame:
    """Generate an answer for every sample not yet in ``out_path``; return all predictions in sample order.

    Args:
        prompt_collator: turns samples into a left-padded batch without the final assistant turn
            (``collate.Collator(processor, config, prompt_only=True)``); it may drop samples for length.
        out_path: predictions JSONL; appended to, never rewritten.
        seed: sampling seed (see ``GenerationConfig``); unused when decoding greedily.
        checkpoint_interval: append finished rows once at least this many wait (None: after every batch);
            the rows still waiting are written when the loop ends, also by an exception.
        on_error: ``on_error(sample_id, error)`` for each sample that fails alone after its batch raised;
            such a sample gets no row. None: an error ends the run, as before.
        adapter_of: sample id -> the PEFT adapter that answers it (routing per sample: a batch may mix
            adapters); None: the active adapter answers every sample.
        sampling: ``do_sample``, ``temperature``, ``top_p``; greedy by default.

    Returns:
        DataFrame with columns ``id`` and ``prediction``, one row per sample (None where the collator
        dropped the sample for length, or where it failed under ``on_error``).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ids = [s["id"] for s in samples]
    _check_unique(ids)
    unrouted = [i for i in ids if adapter_of is not None and i not in adapter_of]
    if unrouted:
        raise ValueError(f"{len(unrouted)} samples have no adapter in adapter_of, e.g. {unrouted[:3]}")
    repair_jsonl(out_path)
    batches = pending_batches(ids, read_predictions(out_path), batch_size)
    model.eval()
    answer = functools.partial(_answer, model, prompt_collator, tokenizer, stop_token_ids, max_new_tokens,
                               seed, sampling, adapter_of)
    todo, start, waiting = sum(len(p) for _, p in batches), time.perf_counter(), []
    with tqdm(total=len(samples), initial=len(samples) - todo, desc="generate", unit="sample",
              disable=not progress) as bar:
        try:
            for k, positions in batches:
                chosen = [samples[i] for i in positions]
                if on_error is None:
                    waiting += answer(chosen, k)
                else:
                    waiting += _answer_each(answer, chosen, k, on_error)
                if waiting and len(waiting) >= (checkpoint_interval or 1):
                    rows, waiting = waiting, []
                    append_predictions(out_path, rows)
                rate = (bar.n + len(positions) - len(samples) + todo) / (time.perf_counter() - start)
                bar.set_postfix(samples_per_s=f"{rate:.1f}", refresh=False)  # drawn by the update
                bar.update(len(positions))
        finally:
            if waiting:  # finished rows are kept whatever stopped the loop
                append_predictions(out_path, waiting)
    done = read_predictions(out_path)
    return pd.DataFrame({"id": ids, "prediction": pd.Series([done.get(i) for i in ids], dtype=object)})


def prediction_path(run_dir: Path, task: str, split: str = "test", prefix: str = PREDICTIONS_PREFIX) -> Path:
    """``predictions/<prefix>_<task>_<split>.jsonl`` of a run (the run contract's name)."""
    return Path(run_dir) / "predictions" / f"{prefix}_{task}_{split}.jsonl"


def _sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: train the task first (notebook 04)")
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def generation_record(task_dir: Path, samples_path: Path, config: GenerationConfig,
                      adapter: str = "adapter") -> dict[str, Any]:
    """What a predictions file was generated from: adapter and settings, samples file, generation config.

    Args:
        task_dir: ``models/<name>/`` with ``settings.json`` and the ``adapter`` folder.
    """
    task_dir = Path(task_dir)
    files = [task_dir / "settings.json", *sorted(p for p in (task_dir / adapter).rglob("*") if p.is_file())]
    return {"adapter": f"{task_dir.name}/{adapter}", "adapter_sha256": _sha256_files(files),
            "samples_sha256": _sha256_files([Path(samples_path)]), "generation": asdict(config)}


def guard_resume(out_path: Path, record: dict[str, Any], on_change: str = "restart") -> Path:
    """Resume ``out_path`` only if it was generated from the same ``record``; write the record beside it.

    A predictions file made by another adapter (notebook 04 re-run), other samples or another generation
    config is not continued: it is removed (``on_change="restart"``) or an error says so (``"error"``).

    Returns:
        The record's path, ``<out stem>.meta.json``.
    """
    if on_change not in ("restart", "error"):
        raise ValueError(f"on_change={on_change!r}: use 'restart' or 'error'")
    out_path = Path(out_path)
    meta_path = out_path.with_name(out_path.stem + ".meta.json")
    old = read_json(meta_path) if meta_path.is_file() else None
    if out_path.is_file() and out_path.stat().st_size > 0 and old != record:
        if on_change == "error":
            changed = sorted(k for k in record if (old or {}).get(k) != record[k])
            raise ValueError(f"{out_path} was generated from another {', '.join(changed)}; delete it (and "
                             f"{meta_path.name}) or restart to generate it again")
        out_path.unlink()
    write_json(record, meta_path)
    return meta_path
