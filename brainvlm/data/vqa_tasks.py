"""Per-domain Med-VQA task files from canonical ``vqa`` samples (the seed's ``fusion`` step), and their audit.

A continual-learning stream learns one domain after another, so the samples of a question file are
fused into one task per domain (``metadata.domain``: ``abdomen``, ``chest``, ``head``), each with its
``train``, ``val`` and ``test`` split:

- :func:`read_vqa_file` reads a question file through its adapter: a ``.json`` file in the VQA-RAD layout,
  a ``.jsonl`` file in the LLaVA-Med VQA layout.
- :func:`split_by_image` carves a validation split from a training file **by image**: every question about
  an image lands on the same side (questions about one image are not independent, so a split by question
  would let validation see its training images). Images are drawn per domain with a seed.
- :func:`domain_tasks` groups the splits by domain; :func:`write_domain_tasks` writes
  ``<task_dir>/<domain>/{train,val,test}.jsonl``; :func:`fuse_files` does all of it from two files.
- :func:`image_audit` checks that no image sits in two splits, one row per pair of splits. It is a
  report, not a guard: VQA-RAD's test images all appear in its training file, and the audit says so.
  :func:`task_counts` counts questions, images and answer types per domain and split.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from brainvlm.core.jsonio import read_jsonl, write_jsonl
from brainvlm.data.adapters.llava_med import read_llava_med
from brainvlm.data.adapters.vqa_rad import vqa_rad_to_samples
from brainvlm.data.schema import SPLITS

DOMAINS = ("abdomen", "chest", "head")  # the order of the seed's task stream
MAX_LISTED = 10


def read_vqa_file(path: str | Path, split: str | None = None, image_root: str | Path | None = None,
                  dataset: str = "llava_med") -> list[dict]:
    """Canonical ``vqa`` samples of a question file: VQA-RAD layout (``.json``) or LLaVA-Med (``.jsonl``).

    ``dataset`` names a LLaVA-Med file's samples (id prefix, ``metadata.dataset``); VQA-RAD names its own.
    """
    path = Path(path)
    if path.suffix == ".json":
        return vqa_rad_to_samples(path, image_root=image_root, split=split)
    if path.suffix == ".jsonl":
        return read_llava_med(path, split=split, image_root=image_root, dataset=dataset)
    raise ValueError(f"{path}: unknown question file; expected .json (VQA-RAD layout) or .jsonl (LLaVA-Med)")


def _field(sample: Mapping, key: str) -> str:
    value = sample.get("metadata", {}).get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"sample {sample.get('id')!r}: $.metadata.{key} is {value!r}; the VQA adapters "
                         f"write it (read the file with read_vqa_file)")
    return value


def _listed(values: Iterable[str]) -> str:
    values = sorted(values)
    more = f" ... ({len(values)} in all)" if len(values) > MAX_LISTED else ""
    return ", ".join(values[:MAX_LISTED]) + more


def _validation_images(images: list[str], fraction: float, rng: np.random.Generator) -> set[str]:
    """``round(fraction * n)`` of a domain's images (at least one, never all when there are two or more)."""
    n_val = min(max(round(fraction * len(images)), 1), max(len(images) - 1, 1)) if fraction > 0 else 0
    order = rng.permutation(len(images))
    return {images[i] for i in order[:n_val]}


def _images_by_domain(samples: Sequence[dict]) -> dict[str, set[str]]:
    """Domain -> its images; an image asked about in two domains is an error naming it."""
    domains_of: dict[str, set[str]] = {}
    for sample in samples:
        domains_of.setdefault(_field(sample, "image"), set()).add(_field(sample, "domain"))
    mixed = {image: sorted(domains) for image, domains in domains_of.items() if len(domains) > 1}
    if mixed:
        image, domains = next(iter(sorted(mixed.items())))
        raise ValueError(f"image {image!r} has questions in domains {domains} ({len(mixed)} such images); "
                         "an image belongs to one domain: fix metadata.domain of its questions")
    by_domain: dict[str, set[str]] = {}
    for image, (domain,) in domains_of.items():
        by_domain.setdefault(domain, set()).add(image)
    return by_domain


def split_by_image(samples: Sequence[dict], fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Carve a validation split from training samples by image, per domain.

    Args:
        samples: ``vqa`` samples with ``metadata.image`` and ``metadata.domain``.
        fraction: share of each domain's images that goes to validation (0 <= fraction < 1).
        seed: the same samples and seed give the same split.

    Returns:
        ``(train, val)`` in input order; copies, the validation ones with ``metadata.split = "val"``.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction={fraction}; give the validation share of the images, 0 <= fraction < 1")
    domain_images = _images_by_domain(samples)
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for domain in sorted(domain_images):
        chosen |= _validation_images(sorted(domain_images[domain]), fraction, rng)
    train, val = [], []
    for sample in samples:
        copied = copy.deepcopy(sample)
        if _field(sample, "image") in chosen:
            copied["metadata"]["split"] = "val"
            val.append(copied)
        else:
            train.append(copied)
    return train, val


def image_audit(splits: Mapping[str, Sequence[dict]]) -> pd.DataFrame:
    """One ``check``, ``passed``, ``detail`` row per pair of splits: no image in both (shared ones listed)."""
    images = {name: {_field(s, "image") for s in samples} for name, samples in splits.items()}
    rows = []
    for a, b in combinations(images, 2):
        shared = images[a] & images[b]
        rows.append({"check": f"no image in both {a} and {b}", "passed": not shared,
                     "detail": f"{len(shared)} shared images: {_listed(shared)}" if shared else "none"})
    return pd.DataFrame(rows, columns=["check", "passed", "detail"])


def domain_tasks(splits: Mapping[str, Sequence[dict]],
                 domains: Sequence[str] | None = None) -> dict[str, dict[str, list[dict]]]:
    """Domain -> split -> samples (input order), domains in ``domains`` order (default: abdomen, chest, head).

    Raises:
        ValueError: a split name other than train/val/test; a sample of a domain not in ``domains``.
    """
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"splits {unknown}: name the splits {list(SPLITS)}")
    present = {_field(s, "domain") for samples in splits.values() for s in samples}
    order = list(domains) if domains is not None else [d for d in DOMAINS if d in present] + \
        sorted(present - set(DOMAINS))
    stray = sorted(present - set(order))
    if stray:
        raise ValueError(f"samples of domain(s) {stray} are not in domains={list(order)}; "
                         "add them or drop the samples")
    return {domain: {split: [s for s in samples if _field(s, "domain") == domain]
                     for split, samples in splits.items()} for domain in order}


def write_domain_tasks(tasks: Mapping[str, Mapping[str, Sequence[dict]]],
                       task_dir: str | Path) -> dict[str, dict[str, Path]]:
    """Write ``<task_dir>/<domain>/<split>.jsonl`` for every domain and split; return the paths."""
    return {domain: {split: write_jsonl(list(samples), Path(task_dir) / domain / f"{split}.jsonl")
                     for split, samples in by_split.items()} for domain, by_split in tasks.items()}


def read_domain_tasks(task_dir: str | Path, domains: Sequence[str]) -> dict[str, dict[str, list[dict]]]:
    """Read back what :func:`write_domain_tasks` wrote, for ``domains`` in their order."""
    out = {}
    for domain in domains:
        folder = Path(task_dir) / domain
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no task files for domain {domain!r}; write them first "
                                    "(write_domain_tasks or fuse_files)")
        out[domain] = {split: read_jsonl(folder / f"{split}.jsonl") for split in SPLITS
                       if (folder / f"{split}.jsonl").is_file()}
    return out


def fuse_files(train_path: str | Path, test_path: str | Path, task_dir: str | Path,
               val_fraction: float = 0.15, seed: int = 0, image_root: str | Path | None = None,
               dataset: str = "llava_med") -> dict[str, dict[str, Path]]:
    """Question files -> per-domain task files: validation carved from the training file by image.

    Returns:
        Domain -> split -> path of the written JSONL.
    """
    train, val = split_by_image(read_vqa_file(train_path, "train", image_root, dataset), val_fraction, seed)
    test = read_vqa_file(test_path, "test", image_root, dataset)
    return write_domain_tasks(domain_tasks({"train": train, "val": val, "test": test}), task_dir)


def task_counts(tasks: Mapping[str, Mapping[str, Sequence[dict]]]) -> pd.DataFrame:
    """Questions, images, closed and open questions per domain and split (one row each)."""
    rows = []
    for domain, by_split in tasks.items():
        for split, samples in by_split.items():
            kinds = [s["metadata"].get("answer_type") for s in samples]
            rows.append({"domain": domain, "split": split, "questions": len(samples),
                         "images": len({_field(s, "image") for s in samples}),
                         "closed": kinds.count("CLOSED"), "open": kinds.count("OPEN")})
    return pd.DataFrame(rows, columns=["domain", "split", "questions", "images", "closed", "open"])
