"""Report-generation metrics with intervals: label-block F1 from per-sample counts, text metrics, comparisons.

``scoring.task_metrics(table, "report")`` gives every label metric of one system once (micro/macro/example
F1, accuracy, u0 and u1, ICD exact-set accuracy). Intervals need each metric a thousand times over
resampled patients, and comparisons need the same resample for two systems, so this module turns a
system's answers into one row of true-positive, false-positive and false-negative counts per sample and
label (``count_table``); micro- and macro-F1 of any resample are then sums over rows (``label_f1``).

- CheXpert counts use the label block the model writes, uncertain (-1) counted negative (u0, the
  headline) over the 14 observations; ``chexpert5`` is the competition subset.
- ICD counts can be split by which codes a source determines (``icd_groups``: the codes the image shows
  and the codes only the EHR gives on the synthetic default), so "EHR on minus off" is measured where the
  EHR matters and where it should not.
- An unparseable block counts as the empty set (every reference label a false negative) and is counted
  in ``chexpert_parse_rate`` / ``icd_parse_rate``, never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from brainvlm.eval import answers, bootstrap, scoring

UNIT = "patient"
ICD_ALL = "icd"


def _counts(truth: frozenset, guess: frozenset, labels: Sequence[str], prefix: str) -> dict[str, int]:
    row = {}
    for label in labels:
        row[f"{prefix}{label}:tp"] = int(label in truth and label in guess)
        row[f"{prefix}{label}:fp"] = int(label in guess and label not in truth)
        row[f"{prefix}{label}:fn"] = int(label in truth and label not in guess)
    return row


def count_table(samples: Sequence[dict], predictions: Sequence[str | None],
                icd_groups: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Per sample: ``patient``, parse flags and ``<group>:<label>:tp|fp|fn`` counts.

    Groups: ``chexpert`` (the 14 observations, u0), ``icd`` (every code of the references and answers) and
    each of ``icd_groups`` (name -> codes).
    """
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions; pass one per sample")
    references = [scoring.reference_text(s) for s in samples]
    icd_codes = sorted(set().union(*(answers.parse_icd(t) or frozenset() for t in [*references, *predictions])))
    rows = []
    for sample, reference, prediction in zip(samples, references, predictions):
        truth = answers.chexpert_positive(answers.parse_chexpert(reference) or {}, "zeros")
        parsed = answers.parse_chexpert(prediction)
        guess = frozenset() if parsed is None else answers.chexpert_positive(parsed, "zeros")
        ref_icd, icd = answers.parse_icd(reference) or frozenset(), answers.parse_icd(prediction)
        row = {UNIT: sample.get("metadata", {}).get("patient_id", sample["id"]), "id": sample["id"],
               "chexpert_parsed": parsed is not None, "icd_parsed": icd is not None,
               "both_parsed": parsed is not None and icd is not None,
               **_counts(truth, guess, answers.CHEXPERT_14, "chexpert:"),
               **_counts(ref_icd, icd or frozenset(), icd_codes, f"{ICD_ALL}:")}
        for name, codes in (icd_groups or {}).items():
            row.update(_counts(ref_icd, icd or frozenset(), list(codes), f"{name}:"))
        rows.append(row)
    return pd.DataFrame(rows)


def group_labels(table: pd.DataFrame, group: str) -> list[str]:
    """The labels of a count group, in column order."""
    prefix = f"{group}:"
    return list(dict.fromkeys(c[len(prefix):].rsplit(":", 1)[0] for c in table.columns if c.startswith(prefix)))


def _f1(tp: float, fp: float, fn: float) -> float:
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else math.nan


def _sums(table: pd.DataFrame) -> dict[str, float]:
    """Column sums of the count columns (``group:label:kind``) and the parse flags."""
    columns = [c for c in table.columns if c.count(":") >= 2 or c.endswith("_parsed")]
    return dict(zip(columns, table[columns].to_numpy(dtype=float).sum(axis=0)))


def _f1_from(sums: Mapping[str, float], group: str, labels: Sequence[str]) -> dict[str, float]:
    counts = {kind: [sums.get(f"{group}:{label}:{kind}", 0.0) for label in labels] for kind in ("tp", "fp", "fn")}
    micro = _f1(*(sum(counts[kind]) for kind in ("tp", "fp", "fn")))
    per_label = [_f1(tp, fp, fn) for tp, fp, fn in zip(counts["tp"], counts["fp"], counts["fn"])]
    defined = [v for v in per_label if not math.isnan(v)]
    return {"micro_f1": micro, "macro_f1": float(np.mean(defined)) if defined else math.nan}


def label_f1(table: pd.DataFrame, group: str, labels: Sequence[str] | None = None) -> dict[str, float]:
    """Micro- and macro-F1 of a count group (``labels``: a subset; macro over labels with any count)."""
    return _f1_from(_sums(table), group, list(labels) if labels is not None else group_labels(table, group))


def per_label(table: pd.DataFrame, group: str, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per label of a count group: tp, fp, fn, support, F1 (NaN when nothing to count)."""
    labels = list(labels) if labels is not None else group_labels(table, group)
    rows = []
    for label in labels:
        tp, fp, fn = (int(table[f"{group}:{label}:{kind}"].sum()) for kind in ("tp", "fp", "fn"))
        rows.append({"label": label, "tp": tp, "fp": fp, "fn": fn, "support": tp + fn, "f1": _f1(tp, fp, fn)})
    return pd.DataFrame(rows).set_index("label")


def headline(table: pd.DataFrame, icd_groups: Sequence[str] = ()) -> dict[str, float]:
    """CheXpert-14 and -5 micro/macro F1 (u0), ICD micro/macro F1 (all codes and each group), parse rates.

    ``parse_rate`` is the share of answers whose label block and ICD line both parse.
    """
    return _headline(_sums(table), len(table), {g: group_labels(table, g) for g in (ICD_ALL, *icd_groups)})


def _headline(sums: Mapping[str, float], n: int, icd_labels: Mapping[str, list[str]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, labels in (("chexpert14", answers.CHEXPERT_14), ("chexpert5", answers.CHEXPERT_5)):
        scores = _f1_from(sums, "chexpert", labels)
        out[f"{name}_micro_f1_u0"], out[f"{name}_macro_f1_u0"] = scores["micro_f1"], scores["macro_f1"]
    for group, labels in icd_labels.items():
        scores = _f1_from(sums, group, labels)
        out[f"{group}_micro_f1"], out[f"{group}_macro_f1"] = scores["micro_f1"], scores["macro_f1"]
    for flag in ("chexpert", "icd", "both"):
        out[f"{flag}_parse_rate"] = sums.get(f"{flag}_parsed", math.nan) / n if n else math.nan
    return out


class _Resampler:
    """``headline`` of row subsets without building a DataFrame per replicate."""

    def __init__(self, table: pd.DataFrame, icd_groups: Sequence[str]):
        self.columns = [c for c in table.columns if c.count(":") >= 2 or c.endswith("_parsed")]
        self.values = table[self.columns].to_numpy(dtype=float)
        self.icd_labels = {g: group_labels(table, g) for g in (ICD_ALL, *icd_groups)}

    def __call__(self, rows: np.ndarray) -> dict[str, float]:
        sums = dict(zip(self.columns, self.values[rows].sum(axis=0)))
        return _headline(sums, len(rows), self.icd_labels)


def intervals(table: pd.DataFrame, icd_groups: Sequence[str] = (), n_boot: int = 1000,
              seed: int = 0, level: float = 0.95) -> dict[str, dict]:
    """``headline`` with percentile intervals resampling patients."""
    measure = _Resampler(table, icd_groups)
    point = measure(np.arange(len(table)))
    replicates: dict[str, list[float]] = {name: [] for name in point}
    for rows in bootstrap.bootstrap_indices(list(table[UNIT]), n_boot, seed):
        for name, value in measure(rows).items():
            replicates[name].append(value)
    return {name: {**bootstrap.percentile_interval(point[name], replicates[name], level), "unit": UNIT,
                   "n_units": int(table[UNIT].nunique())} for name in point}


def difference(a: pd.DataFrame, b: pd.DataFrame, metric: str, icd_groups: Sequence[str] = (),
               n_boot: int = 1000, seed: int = 0) -> dict[str, float | int]:
    """``headline[metric]`` of ``a`` minus that of ``b`` (same samples, same order), paired over patients."""
    if list(a["id"]) != list(b["id"]):
        raise ValueError(f"{metric}: the two systems answered different samples; pair them on the same ones")
    systems = (_Resampler(a, icd_groups), _Resampler(b, icd_groups))
    rows = [pd.DataFrame({"row": np.arange(len(a)), "system": k}) for k in (0, 1)]
    statistic = lambda t: systems[int(t["system"].iat[0])](t["row"].to_numpy())[metric] if len(t) else math.nan
    return bootstrap.paired_statistic_difference(*rows, statistic, list(a[UNIT]), n_boot, seed)


def impression_pairs(samples: Sequence[dict], predictions: Sequence[str | None]) -> tuple[list[str], list[list[str]]]:
    """The Impression text of each answer and of its reference (the label block and ICD line left out)."""
    hypotheses = [answers.report_text(p) for p in predictions]
    references = [[answers.report_text(scoring.reference_text(s))] for s in samples]
    return hypotheses, references


def labeler_agreement(samples: Sequence[dict], observations: Sequence[str] = answers.CHEXPERT_14) -> pd.DataFrame:
    """Per observation: how often the rule labeler, reading a reference's Impression text, gives the label
    block's value (1 / 0 / -1 / blank), with the counts of each disagreement kind."""
    from brainvlm.eval import chexpert_labeler

    rows = []
    pairs = [(answers.parse_chexpert(scoring.reference_text(s)) or {},
              chexpert_labeler.label_report(answers.report_text(scoring.reference_text(s)))) for s in samples]
    for name in observations:
        truth = [block.get(name) for block, _ in pairs]
        rule = [labels.get(name) for _, labels in pairs]
        stated = [t is not None for t in truth]
        if not any(stated) and not any(r is not None for r in rule):
            continue
        agree = [t == r for t, r in zip(truth, rule)]
        rows.append({"observation": name, "reports": len(pairs), "stated in block": sum(stated),
                     "agreement": float(np.mean(agree)), "labeler blank, block set": sum(
                         t is not None and r is None for t, r in zip(truth, rule)),
                     "labeler set, block blank": sum(t is None and r is not None for t, r in zip(truth, rule)),
                     "values differ": sum(t is not None and r is not None and t != r for t, r in zip(truth, rule))})
    return pd.DataFrame(rows)
