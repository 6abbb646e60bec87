"""Turn a cohort and its split assignment into canonical comparison samples and example files.

A comparison sample shows ``n_references`` reference scans with their label (or value), each in a user
turn acknowledged by the assistant, then asks about a query scan:

    user: reference text + image · assistant: ack · ... · user: query text + image · assistant: answer

Queries come only from a split's query pool and references only from the same split's reference pool
(see :mod:`brainvlm.data.splits`). The wording lives in the params (``prompts``); ``DEFAULT_PROMPTS`` is used
for every key the params leave out. Files are written through :mod:`brainvlm.core.jsonio`.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainvlm.core.jsonio import write_json
from brainvlm.data.schema import MODALITIES, SPLITS

TASK_TYPES = ("categorical", "numerical")
PROMPT_KEYS = ("reference", "reference_ack", "query", "answer")
VALUE_FIELD = {"categorical": "label", "numerical": "value"}  # the placeholder that carries the target
COMMON_FIELDS = ("modality_name", "target_name")
TARGET_KEYS = ("reference", "reference_ack", "answer")  # the query may not name the target: it is the question
DEFAULT_PROMPTS = {
    "categorical": {
        "reference": "Here is a {modality_name} brain scan of a {label} participant (reference).",
        "reference_ack": "Understood.",
        "query": "Compare this scan with the reference. What is the {target_name} of this participant?",
        "answer": "Based on the comparison, the participant is {label}.",
    },
    "numerical": {
        "reference": "Here is a {modality_name} brain scan of a participant with a {target_name} of {value} "
                     "(reference).",
        "reference_ack": "Understood.",
        "query": "Compare this scan with the reference. What is the {target_name} of this participant?",
        "answer": "Based on the comparison, the {target_name} of this participant is {value}.",
    },
}
MODALITY_NAMES = {"sMRI": "T1-weighted", "dMRI": "diffusion-weighted", "fMRI": "functional", "mri": "MRI",
                  "ct": "CT", "xray": "X-ray", "ultrasound": "ultrasound", "pet": "PET",
                  "pathology": "histopathology", "other": "medical"}
IMAGE_TOKEN = "<image>"


class TaskError(ValueError):
    """A task specification, template or input record that cannot be used; the message says which."""


# -------------------------------------------------------------------------------------------- spec
@dataclass
class TaskSpec:
    """One comparison task: what to predict, how many samples, and the wording (``prompts``).

    ``prompts`` overrides ``DEFAULT_PROMPTS[task_type]`` key by key. Placeholders: ``{modality_name}``
    and ``{target_name}`` everywhere; ``{label}`` (categorical) or ``{value}`` (numerical, ``precision``
    decimals) in ``reference``, ``reference_ack`` and ``answer``, never in ``query``.
    """

    name: str
    task_type: str
    target_col: str
    num_pairs: int = 3  # samples per query subject
    n_references: int = 1  # reference scans per conversation (2k+2 turns)
    precision: int = 2  # decimals of numerical values in the text and metadata
    modality: str = "sMRI"
    cohort_name: str = "synthetic"  # id prefix: {cohort_name}_{name}_comparison_{split}_{n:06d}
    labels: dict[str, list[str]] | None = None  # canonical label -> raw values (read by the cohort step)
    prompts: dict[str, str] = field(default_factory=dict)
    same_class_fraction: float = 0.5  # categorical: share of references with the query's class
    target_name: str | None = None  # {target_name}; default: target_col with spaces for underscores
    modality_name: str | None = None  # {modality_name}; default: MODALITY_NAMES[modality]
    domain: str = "brain"
    valid_range: list[float] | None = None  # numerical: [lo, hi]; rows outside are counted exclusions

    def __post_init__(self) -> None:
        where = f"task '{self.name}'"
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise TaskError(f"task name {self.name!r}: use letters, digits, '_', '.', '-' (it goes into ids)")
        if self.task_type not in TASK_TYPES:
            raise TaskError(f"{where}: task_type must be one of {list(TASK_TYPES)}, got {self.task_type!r}")
        for key in ("num_pairs", "n_references"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise TaskError(f"{where}: {key} must be an integer >= 1, got {getattr(self, key)!r}")
        if not isinstance(self.precision, int) or self.precision < 0:
            raise TaskError(f"{where}: precision must be an integer >= 0, got {self.precision!r}")
        if self.modality not in MODALITIES:
            raise TaskError(f"{where}: modality must be one of {list(MODALITIES)}, got {self.modality!r}")
        if not 0.0 <= float(self.same_class_fraction) <= 1.0:
            raise TaskError(f"{where}: same_class_fraction must be in [0, 1], got {self.same_class_fraction}")
        if self.labels is not None and not isinstance(self.labels, Mapping):
            raise TaskError(f"{where}: labels must map a canonical label to its raw values, got {self.labels!r}")
        self._check_valid_range(where)
        self.prompts = dict(self.prompts or {})
        unknown = sorted(set(self.prompts) - set(PROMPT_KEYS))
        if unknown:
            raise TaskError(f"{where}: unknown prompt key(s) {unknown}; known: {list(PROMPT_KEYS)}")
        for key, template in self.templates.items():
            check_template(template, key, self.task_type, where)

    def _check_valid_range(self, where: str) -> None:
        if self.valid_range is None:
            return
        value = self.valid_range
        numbers = (isinstance(value, (list, tuple)) and len(value) == 2
                   and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
        if self.task_type != "numerical" or not numbers or not value[0] < value[1]:
            raise TaskError(f"{where}: valid_range must be [lo, hi] with finite lo < hi, for a numerical task; "
                            f"got {value!r} ({self.task_type})")
        self.valid_range = [float(value[0]), float(value[1])]

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> TaskSpec:
        """A spec from a params ``tasks`` entry; unknown or missing keys are errors that name them."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(entry) - set(known))
        label = entry.get("name", "?")
        if unknown:
            raise TaskError(f"task '{label}': unknown key(s) {unknown}; known keys: {known}")
        missing = [k for k in ("name", "task_type", "target_col") if k not in entry]
        if missing:
            raise TaskError(f"task '{label}': missing required key(s) {missing}")
        return cls(**dict(entry))

    @property
    def templates(self) -> dict[str, str]:
        """The prompt templates in use: the defaults for ``task_type`` updated with ``prompts``."""
        return {**DEFAULT_PROMPTS[self.task_type], **self.prompts}

    @property
    def kind(self) -> str:
        """The samples' ``task`` field."""
        return f"comparison_{self.task_type}"

    def words(self) -> dict[str, str]:
        """Values of the placeholders shared by every template."""
        return {"modality_name": self.modality_name or MODALITY_NAMES[self.modality],
                "target_name": self.target_name or self.target_col.replace("_", " ")}


def check_template(template: str, key: str, task_type: str, where: str = "task") -> None:
    """Raise :class:`TaskError` naming ``prompts.<key>`` if the template has a placeholder not allowed there."""
    allowed = set(COMMON_FIELDS) | ({VALUE_FIELD[task_type]} if key in TARGET_KEYS else set())
    if not isinstance(template, str) or not template.strip():
        raise TaskError(f"{where}: prompts.{key} must be a non-empty string, got {template!r}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TaskError(f"{where}: prompts.{key} is not a valid template ({exc}): {template!r}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in allowed:
            raise TaskError(f"{where}: prompts.{key} uses unknown placeholder {{{name}}}; allowed in {key} "
                            f"for a {task_type} task: {sorted('{' + a + '}' for a in allowed)}")
        if spec or conversion:
            raise TaskError(f"{where}: prompts.{key}: write {{{name}}} without a format (precision sets "
                            "the decimals)")


def format_value(value: float, precision: int) -> str:
    """A numerical target as written in text: ``precision`` decimals, never ``-0.00``."""
    text = f"{value:.{precision}f}"
    return f"{0.0:.{precision}f}" if float(text) == 0 else text


# ---------------------------------------------------------------------------------------- sampling
def _joined(cohort: pd.DataFrame, assignment: pd.DataFrame, spec: TaskSpec) -> pd.DataFrame:
    """Cohort rows with their split and pool; targets as labels or rounded floats."""
    left = cohort[["subject", "target", "image"]].astype({"subject": str, "image": str})
    right = assignment[["subject", "split", "pool"]].astype({"subject": str})
    table = left.merge(right, on="subject", how="outer", indicator=True)
    for side, what in (("left_only", "the cohort but not the split assignment"),
                       ("right_only", "the split assignment but not the cohort")):
        stray = sorted(table.loc[table["_merge"] == side, "subject"])
        if stray:
            raise TaskError(f"task '{spec.name}': {len(stray)} subject(s) in {what}: {stray[:10]}; "
                            "split the same cohort the samples are built from")
    if spec.task_type == "numerical":
        values = pd.to_numeric(table["target"], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(values).all():
            bad = sorted(table.loc[~np.isfinite(values), "subject"])[:10]
            raise TaskError(f"task '{spec.name}': non-numeric target for subject(s) {bad}")
        with np.errstate(over="ignore"):
            rounded = np.round(values, spec.precision) + 0.0  # + 0.0 turns -0.0 into 0.0
        overflow = ~np.isfinite(rounded)
        if overflow.any():
            shown = [f"{s} ({v:g})" for s, v in zip(table.loc[overflow, "subject"], values[overflow])][:10]
            raise TaskError(f"task '{spec.name}': target(s) {shown} are not finite at precision {spec.precision} "
                            "(rounding overflows); a value this large is a code, not a measurement: set the task's "
                            "valid_range to exclude it, or fix the table")
        table["target"] = rounded
    else:
        table["target"] = table["target"].astype(str)
    return table.drop(columns="_merge").sort_values("subject", kind="stable").reset_index(drop=True)


def _slot_kinds(query_classes: np.ndarray, ref_classes: np.ndarray, slots: int, fraction: float,
                rng: np.random.Generator) -> np.ndarray:
    """(n_queries, slots) bool: reference slot wants the query's class; exact share ``fraction``.

    A class with no reference of its own (or no other class among references) gets what exists.
    """
    n = len(query_classes) * slots
    same = np.zeros(n, dtype=bool)
    same[: round(n * fraction)] = True
    same = rng.permutation(same).reshape(len(query_classes), slots)
    for c in np.unique(query_classes):
        rows = query_classes == c
        if not (ref_classes == c).any():
            same[rows] = False
        elif (ref_classes == c).all():
            same[rows] = True
    return same


def pick_references(query_targets: np.ndarray, ref_targets: np.ndarray, spec: TaskSpec,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Reference positions for every (query, pair, reference) and which of them share the query's class.

    Each pool of candidates (all references, or per class: same / other class) is shuffled once; a query
    takes consecutive candidates from a random start, so its references are distinct while the pool is
    at least as large as what it needs. O(n) in queries and references.

    Returns:
        ``refs`` (n_queries, num_pairs, n_references) positions into ``ref_targets``, and ``same`` of the
        same shape (all False for numerical tasks).
    """
    n_q, slots = len(query_targets), spec.num_pairs * spec.n_references
    categorical = spec.task_type == "categorical"
    same = (_slot_kinds(query_targets, ref_targets, slots, spec.same_class_fraction, rng) if categorical
            else np.zeros((n_q, slots), dtype=bool))
    refs = np.zeros((n_q, slots), dtype=int)
    keys = [(c, s) for c in np.unique(query_targets) for s in (True, False)] if categorical else [(None, False)]
    for cls, want_same in keys:
        rows = np.flatnonzero(query_targets == cls) if categorical else np.arange(n_q)
        chosen = same[rows] == want_same
        if not chosen.any():
            continue
        pool = np.flatnonzero((ref_targets == cls) == want_same) if categorical else np.arange(len(ref_targets))
        pool = rng.permutation(pool)
        rank = np.cumsum(chosen, axis=1) - 1
        start = rng.integers(0, len(pool), size=(len(rows), 1))
        picks = pool[(start + rank) % len(pool)]
        block = refs[rows]
        block[chosen] = picks[chosen]
        refs[rows] = block
    shape = (n_q, spec.num_pairs, spec.n_references)
    return refs.reshape(shape), same.reshape(shape)


def _texts(targets: np.ndarray, spec: TaskSpec) -> dict[Any, dict[str, str]]:
    """Per distinct target: the reference, ack and answer texts (templates filled once, not per sample)."""
    words, out = spec.words(), {}
    for target in dict.fromkeys(targets.tolist()):
        shown = format_value(target, spec.precision) if spec.task_type == "numerical" else target
        fill = {**words, VALUE_FIELD[spec.task_type]: shown}
        out[target] = {key: spec.templates[key].format(**fill) for key in TARGET_KEYS}
    return out


def _turn(role: str, text: str, image: str | None = None, modality: str = "") -> dict:
    content: list[dict] = [{"type": "text", "text": text}]
    if image is not None:
        content.append({"type": "image", "modality": modality, "image_path": image})
    return {"role": role, "content": content}


def _pair_type(same: np.ndarray) -> str:
    return "same_class" if same.all() else "different_class" if not same.any() else "mixed"


def _split_samples(table: pd.DataFrame, split: str, spec: TaskSpec, rng: np.random.Generator) -> list[dict]:
    """The samples of one split: ``num_pairs`` per query subject, in subject order."""
    part = table[table["split"] == split]
    queries, references = part[part["pool"] == "query"], part[part["pool"] == "reference"]
    if queries.empty or references.empty:
        raise TaskError(f"task '{spec.name}': split '{split}' has {len(queries)} query and {len(references)} "
                        "reference subjects; both pools need subjects (see splits.split_subjects)")
    q_targets, r_targets = queries["target"].to_numpy(), references["target"].to_numpy()
    refs, same = pick_references(q_targets, r_targets, spec, rng)
    texts = _texts(np.concatenate([q_targets, r_targets]), spec)
    query_text = spec.templates["query"].format(**spec.words())
    r_subjects, r_images = references["subject"].tolist(), references["image"].tolist()
    r_list = r_targets.tolist()
    samples = []
    for i, (subject, image, target) in enumerate(zip(queries["subject"], queries["image"], q_targets.tolist())):
        for j in range(spec.num_pairs):
            chosen = refs[i, j].tolist()
            turns = []
            for r in chosen:
                turns += [_turn("user", texts[r_list[r]]["reference"], r_images[r], spec.modality),
                          _turn("assistant", texts[r_list[r]]["reference_ack"])]
            turns += [_turn("user", query_text, image, spec.modality), _turn("assistant", texts[target]["answer"])]
            metadata = {"split": split, "target_col": spec.target_col, "target": target, "domain": spec.domain,
                        "task_name": spec.name, "query_subject": subject,
                        "reference_subjects": [r_subjects[r] for r in chosen],
                        "reference_targets": [r_list[r] for r in chosen]}
            if spec.task_type == "categorical":
                metadata["pair_type"] = _pair_type(same[i, j])
            n = len(samples) + 1
            samples.append({"id": f"{spec.cohort_name}_{spec.name}_comparison_{split}_{n:06d}", "task": spec.kind,
                            "conversations": turns, "metadata": metadata})
    return samples


def build_samples(cohort: pd.DataFrame, assignment: pd.DataFrame, spec: TaskSpec,
                  seed: int = 0) -> dict[str, list[dict]]:
    """Canonical comparison samples per split; reads no images.

    Args:
        cohort: ``subject``, ``target``, ``image`` (relative to the image root), one row per subject.
        assignment: the output of :func:`brainvlm.data.splits.split_subjects` for this cohort.
        spec: the task.
        seed: the same inputs and seed give identical samples; each split draws from its own stream.

    Returns:
        split -> samples, ids numbered from 1 inside each split.
    """
    table = _joined(cohort, assignment, spec)
    return {split: _split_samples(table, split, spec, np.random.default_rng([seed, index]))
            for index, split in enumerate(SPLITS)}


# ------------------------------------------------------------------------------------------ examples
def select_examples(samples_by_split: Mapping[str, list[dict]], n: int = 10) -> list[dict]:
    """Up to ``n`` samples covering the variety: every split, pair type and class, spread over the values."""
    groups: dict[tuple, list[dict]] = {}
    for order, split in enumerate(sorted(samples_by_split, key=lambda s: (SPLITS + (s,)).index(s))):
        for sample in samples_by_split[split]:
            meta = sample.get("metadata", {})
            categorical = isinstance(meta.get("target"), str)
            key = (order, meta.get("pair_type", ""), meta.get("target", "") if categorical else "")
            groups.setdefault(key, []).append(sample)
    keys = sorted(groups)
    for key in keys:  # numerical: order by value so the picks spread from low to high
        groups[key].sort(key=_value_order)
    counts = dict.fromkeys(keys, 0)
    while sum(counts.values()) < n and any(counts[k] < len(groups[k]) for k in keys):
        for key in keys:
            if counts[key] < len(groups[key]) and sum(counts.values()) < n:
                counts[key] += 1
    chosen = []
    for key in keys:
        m, c = len(groups[key]), counts[key]  # centred quantiles: different subjects, spread over values
        chosen += [groups[key][int((k + 0.5) * m / c)] for k in range(c)]
    return chosen


def _value_order(sample: dict) -> tuple[float, str]:
    target = sample.get("metadata", {}).get("target")
    numeric = isinstance(target, (int, float)) and not isinstance(target, bool)
    return (float(target) if numeric else 0.0, str(sample.get("id")))


def write_examples(samples_by_split: Mapping[str, list[dict]], out_dir: str | Path, n: int = 10) -> list[Path]:
    """Pretty-print :func:`select_examples` into ``out_dir`` as ``sample_NN_<split>_<subject>_<kind>.json``.

    Earlier ``sample_*.json`` files in ``out_dir`` are removed, so a rerun leaves exactly these files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in sorted(out_dir.glob("sample_*.json")):
        old.unlink()
    paths = []
    for i, sample in enumerate(select_examples(samples_by_split, n), start=1):
        meta = sample["metadata"]
        kind = (f"{meta['pair_type']}_{meta['target']}" if "pair_type" in meta
                else f"{meta.get('target_col', 'target')}_{meta.get('target', '')}")
        name = f"sample_{i:02d}_{meta['split']}_{meta.get('query_subject', sample['id'])}_{kind}"
        path = out_dir / (re.sub(r"[^A-Za-z0-9._-]+", "-", name) + ".json")
        write_json(sample, path)
        paths.append(path)
    return paths


