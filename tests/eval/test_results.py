"""Evaluation tables and figures: headline metrics and group breakdowns with intervals, worst samples, plots."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brainvlm.eval import figures, results, scoring

LABELS = {"male": ["M", "male"], "female": ["F", "female"]}


def _sample(task: str, i: int, target, subject: str, **metadata) -> dict:
    answer = f"The participant is {target}." if task == "sex" else f"The BMI z-score is {target}."
    kind = "comparison_categorical" if task == "sex" else "comparison_numerical"
    turns = [{"role": "user", "content": [{"type": "text", "text": "What is it?"},
                                          {"type": "image", "image_path": f"{subject}.nii.gz"}]},
             {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    return {"id": f"{task}_{i:03d}", "task": kind, "conversations": turns,
            "metadata": {"target": target, "query_subject": subject, "domain": "brain", **metadata}}


def _write(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return path.name


def _run(tmp_path: Path, test: dict[str, list[dict]], train: dict[str, list[dict]],
         predictions: dict[str, dict]) -> Path:
    """A run folder with a manifest, the samples and ``predictions/07_<task>_test.jsonl``."""
    entries = {}
    for task in sorted(test):
        data = tmp_path / "data" / task
        files = {"train": f"{task}/{_write(data / 'train.jsonl', train[task])}",
                 "test": f"{task}/{_write(data / 'test.jsonl', test[task])}"}
        entries[task] = {"labels": LABELS if task == "sex" else None, "files": files}
        _write(tmp_path / "predictions" / f"07_{task}_test.jsonl",
               [{"id": k, "prediction": v} for k, v in predictions[task].items()])
    (tmp_path / "data" / "manifest.json").write_text(json.dumps({"image_root": ".", "tasks": entries}))
    return tmp_path


@pytest.fixture
def evaluated(tmp_path):
    sex = [_sample("sex", i, "male" if i % 2 else "female", f"sub-{i // 2}",
                   pair_type="same_class" if i % 4 < 2 else "different_class") for i in range(12)]
    said = {s["id"]: ("It is M." if s["metadata"]["pair_type"] == "same_class" else "No idea") if i % 3 else
            f"It is {s['metadata']['target']}." for i, s in enumerate(sex)}
    bmi = [_sample("bmi", i, round(0.5 * i - 2, 2), f"sub-{i}") for i in range(6)]
    bmi_train = [_sample("bmi", 100 + i, v, f"sub-t{i}") for i, v in enumerate([1.0, 2.0, 6.0])]
    guesses = {s["id"]: "no number" if i == 2 else f"{s['metadata']['target'] + 0.1 * i:.2f}"
               for i, s in enumerate(bmi)}
    run_dir = _run(tmp_path, {"sex": sex, "bmi": bmi}, {"sex": sex[:2], "bmi": bmi_train},
                   {"sex": said, "bmi": guesses})
    return [results.evaluate_task(run_dir, task, run_dir / "predictions" / f"07_{task}_test.jsonl", n_boot=50)
            for task in ("sex", "bmi")]


def test_headline_metrics_are_evaluate_files_numbers_with_their_intervals(evaluated):
    sex, bmi = evaluated
    flat = results.headline_metrics(evaluated)
    assert sex.unit == "query_subject" and sex.result["ci"]["accuracy"]["n_units"] == 6
    assert flat["sex.accuracy"] == pytest.approx(sex.table["correct"].mean())
    assert flat["sex.accuracy_ci_low"] == sex.result["ci"]["accuracy"]["lo"]
    assert flat["sex.accuracy_ci_high"] == sex.result["ci"]["accuracy"]["hi"]
    numeric = scoring.HEADLINE["comparison_numerical"]
    assert {f"bmi.{m}{s}" for m in numeric for s in ("", "_ci_low", "_ci_high")} <= set(flat)
    assert flat["sex.n_unparseable"] == int((~sex.table["parse_ok"]).sum()) > 0
    assert bmi.config.fallback == pytest.approx(3.0)  # the training mean, not the test mean
    assert flat["bmi.n_unparseable"] == 1
    table = results.headline_table(evaluated)
    assert list(table["task"].unique()) == ["sex", "bmi"] and len(table) == 7


def test_group_intervals_score_each_group_on_its_own_rows(evaluated):
    sex = evaluated[0]
    table = results.group_intervals(sex, "pair_type", n_boot=50)
    for group, rows in sex.table.groupby("pair_type"):
        accuracy = table[(table["group"] == group) & (table["metric"] == "accuracy")].iloc[0]
        assert accuracy["value"] == pytest.approx(rows["correct"].mean())
        assert accuracy["n"] == len(rows) and accuracy["ci_low"] <= accuracy["ci_high"]
    with pytest.raises(KeyError, match="no column 'site'"):
        results.group_intervals(sex, "site")


def test_worst_samples_put_unparseable_then_wrong_then_largest_errors_first(evaluated):
    sex, bmi = evaluated
    worst = results.worst_samples(sex, 4)
    assert not worst["correct"].any()
    unparseable = sex.table[~sex.table["parse_ok"]]["id"].tolist()
    assert worst["id"].tolist()[:len(unparseable)] == sorted(unparseable)[:4]
    errors = results.worst_samples(bmi, 6)["abs_error"].tolist()
    assert errors == sorted(errors, reverse=True)
    with pytest.raises(ValueError, match="confusion matrix needs a label task"):
        results.confusion_table(bmi)


@settings(max_examples=30, deadline=None)
@given(outcomes=st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), min_size=1, max_size=30))
def test_group_value_is_the_share_correct_inside_the_group(outcomes):
    rows = [{"id": f"x{i}", "target": "male", "parsed": "male" if ok else "female", "parse_ok": True,
             "correct": ok, "group": g, "query_subject": f"s{i // 2}"} for i, (ok, g) in enumerate(outcomes)]
    import pandas as pd

    ev = results.TaskEvaluation("sex", "comparison_categorical", {}, pd.DataFrame(rows),
                                scoring.ScoreConfig(labels=LABELS), "query_subject")
    table = results.group_intervals(ev, "group", n_boot=20, metrics=("accuracy",))
    expected = pd.DataFrame(rows).groupby("group")["correct"].mean()
    assert dict(zip(table["group"], table["value"])) == pytest.approx(expected.to_dict())
    assert (table["ci_low"] <= table["ci_high"]).all()


def test_figures_show_the_numbers_they_are_given(evaluated):
    sex, bmi = evaluated
    confusion = results.confusion_table(sex)
    fig = figures.confusion_heatmap(confusion, title="sex")
    shown = sorted(int(t.get_text()) for t in fig.axes[0].texts)
    assert shown == sorted(confusion.to_numpy().ravel().tolist())
    intervals = results.group_intervals(sex, "pair_type", n_boot=50)
    fig = figures.interval_bars(intervals, title="sex by pair type")
    assert [ax.get_title() for ax in fig.axes] == list(scoring.HEADLINE["comparison_categorical"])
    bars = [p.get_height() for p in fig.axes[0].patches]
    assert bars == pytest.approx(intervals[intervals["metric"] == "accuracy"]["value"].tolist())
    fig = figures.predicted_vs_true(bmi.table, fallback=bmi.config.fallback)
    offsets = [c.get_offsets() for c in fig.axes[0].collections]
    assert [len(o) for o in offsets] == [5, 1] and np.allclose(offsets[1][0], [bmi.table["target"][2], 3.0])
    plt.close("all")

