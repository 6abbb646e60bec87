"""Batched generation with left padding, appended to a JSONL keyed by sample id, resumable after a kill.

Each finished batch is appended as one ``{"id", "prediction"}`` line per sample and flushed to disk, so
a run killed mid-way loses at most the batch in flight. Re-running reads the ids already written (a
torn last line from a kill is cut off first) and generates only the rest, in the same order, so an
interrupted and resumed run writes the same file as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from tqdm.auto import tqdm


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
    """id -> prediction from a predictions JSONL; a duplicated id is an error naming its lines."""
    predictions: dict[str, str] = {}
    lines: dict[str, int] = {}
    if not Path(path).is_file():
        return predictions
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if row["id"] in predictions:
                raise ValueError(f"{path}: id {row['id']!r} appears on lines {lines[row['id']]} and {number}")
            predictions[row["id"]], lines[row["id"]] = row["prediction"], number
    return predictions


def append_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows and force them to disk before returning."""
    with open(path, "a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


@torch.no_grad()
def generate_batch(model, batch: dict[str, Any], tokenizer, stop_token_ids: list[int], max_new_tokens: int = 32,
                   **sampling: Any) -> list[str]:
    """Generate for one left-padded prompt batch; returns the decoded new text of each row.

    Args:
        batch: ``input_ids``, ``attention_mask`` (left padded) and ``pixel_values``.
        stop_token_ids: end-of-turn tokens of the model family; generation stops at any of them.
        sampling: passed to ``generate`` (``do_sample``, ``temperature``, ``top_p``); greedy by default.
    """
    if batch["input_ids"].shape[0] > 1 and bool((batch["attention_mask"][:, -1] == 0).any()):
        raise ValueError("generation needs left padding: a prompt ends in padding")
    device = next(model.parameters()).device
    inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "pixel_values") if k in batch}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(next(model.parameters()).dtype)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_token_ids[0]
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=stop_token_ids,
                            pad_token_id=pad_id, do_sample=sampling.pop("do_sample", False), **sampling)
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def predict(model, samples: list[dict], out_path: Path, prompt_collator: Callable[[list[dict]], dict],
            tokenizer, stop_token_ids: list[int], batch_size: int = 16, max_new_tokens: int = 32,
            progress: bool = True, **sampling: Any) -> pd.DataFrame:
    """Generate an answer for every sample not yet in ``out_path``; return all predictions in sample order.

    Args:
        prompt_collator: turns samples into a left-padded batch without the final assistant turn.
        out_path: predictions JSONL; appended to, never rewritten.

    Returns:
        DataFrame with columns ``id`` and ``prediction``, one row per sample.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ids = [s["id"] for s in samples]
    if len(set(ids)) != len(ids):
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate sample ids {duplicated[:5]}: predictions are keyed by id")
    repair_jsonl(out_path)
    done = read_predictions(out_path)
    todo = [s for s in samples if s["id"] not in done]
    model.eval()
    start = time.perf_counter()
    with tqdm(total=len(samples), initial=len(samples) - len(todo), desc="generate", unit="sample",
              disable=not progress) as bar:
        for first in range(0, len(todo), batch_size):
            chunk = todo[first:first + batch_size]
            texts = generate_batch(model, prompt_collator(chunk), tokenizer, stop_token_ids, max_new_tokens,
                                   **dict(sampling))
            append_predictions(out_path, [{"id": s["id"], "prediction": t} for s, t in zip(chunk, texts)])
            bar.update(len(chunk))
            bar.set_postfix(samples_per_s=f"{(first + len(chunk)) / (time.perf_counter() - start):.1f}")
    done = read_predictions(out_path)
    return pd.DataFrame({"id": ids, "prediction": [done[i] for i in ids]})
