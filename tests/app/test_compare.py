"""Comparing runs, on hand-made run folders and on a real local sweep.

The local sweep runs notebooks 01, 04 and 07 on params/ci.yaml (made cheaper: 24 subjects, the sex task
only, two training steps, short answers) for seeds 0 and 1, one run after another; then it is compared
(the two seeds as one group), rerun (everything skipped) and rerun with changed params (refused, naming
the key). Grids are planned and named without running anything in ``test_sweep.py``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from brainvlm.app.compare import CompareError, compare_runs, point_metrics
from brainvlm.core.paths import PARAMS_DIR, PROJECT_ROOT

CHEAPER = {"n_subjects": 24, "brain_max_steps": 2, "brain_val_samples": 4, "brain_numerical_task": "",
           "brain_max_new_tokens": 4, "brain_tasks_to_evaluate": ["sex"], "brain_n_boot": 20}
SWEEP_TIMEOUT_S = 600  # two runs take about a minute each on 2 busy CPU cores


def make_run(folder, name, params, metrics):
    run_dir = folder / name
    (run_dir / "metrics").mkdir(parents=True)
    (run_dir / "provenance.json").write_text(json.dumps({"params": params}))
    (run_dir / "metrics" / "04_train_lora.json").write_text(json.dumps(metrics))
    return run_dir


def test_point_metrics_pair_values_with_both_interval_spellings():
    metrics = {"a": 0.5, "a_lo": 0.4, "a_hi": 0.6, "b": 0.7, "b_ci_low": 0.6, "b_ci_high": 0.8, "c_lo": 1.0}
    got = point_metrics(metrics)
    assert set(got) == {"a", "b", "c_lo"}  # c_lo has no c beside it: a metric of its own
    assert got["a"] == (0.5, 0.4, 0.6) and got["b"] == (0.7, 0.6, 0.8)
    assert got["c_lo"][0] == 1.0 and math.isnan(got["c_lo"][1]) and math.isnan(got["c_lo"][2])


def test_runs_differing_only_in_seed_are_summarised_beside_each_run_s_interval(tmp_path):
    runs = [make_run(tmp_path, f"lr={lr}_seed={seed}", {"brain_lr": lr, "seed": seed, "n_subjects": 40},
                     {"brain.acc": value, "brain.acc_lo": value - 0.1, "brain.acc_hi": value + 0.1,
                      "brain.n": 10})
            for lr, seed, value in ((0.001, 0, 0.6), (0.001, 1, 0.8), (0.002, 0, 0.5), (0.002, 1, 0.9))]
    page = compare_runs(runs, tmp_path / "cmp", group_by="brain_lr")
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    acc = table[table["metric"] == "brain.acc"].set_index("run")
    assert sorted(acc["group"].unique()) == ["brain_lr=0.001", "brain_lr=0.002"]
    row = acc.loc["lr=0.001_seed=1"]
    assert (row["value"], row["lo"], row["hi"]) == pytest.approx((0.8, 0.7, 0.9))
    assert row["seeds_n"] == 2 and row["seeds_mean"] == pytest.approx(0.7)
    assert row["seeds_sd"] == pytest.approx(pd.Series([0.6, 0.8]).std())
    assert (row["seeds_min"], row["seeds_max"]) == pytest.approx((0.6, 0.8))
    assert "brain.acc_lo" not in set(table["metric"])  # an interval bound is not a metric of its own
    text = page.read_text()
    assert "0.7 ± 0.1414" in text and "0.6–0.8" in text and "0.8 [0.7, 0.9]" in text
    assert (tmp_path / "cmp" / "figures" / "brain.acc.png").stat().st_size > 0  # a headline: it has an interval
    assert not (tmp_path / "cmp" / "figures" / "brain.n.png").exists()  # a count: folded, no figure


def study_run(folder, name, params, acc, failed=False):
    """A run of 04 and 07 as the runner leaves it: 04 expects brain.acc >= 0.7 and brain.d_lo >= 0; a failed
    run's 04 failed at cell 12, its 07 was not run, and an earlier run's 07 metrics file is still there."""
    run_dir = folder / name
    (run_dir / "metrics").mkdir(parents=True)
    outcomes = {"04_train_lora": "failed", "07_evaluate": "not run: needs 04"} if failed else \
        {"04_train_lora": "ok", "07_evaluate": "ok"}
    (run_dir / "provenance.json").write_text(json.dumps({
        "params": params, "notebooks": [{"name": n, "status": s, "seconds": 1.0} for n, s in outcomes.items()],
        "notebook_params": {} if failed else {"04_train_lora": {"expect": {"brain.acc": ">= 0.7",
                                                                           "brain.d_lo": ">= 0"}},
                                              "07_evaluate": {"expect": {}}}}))
    if failed:
        (run_dir / "status.json").write_text(json.dumps({"state": "failed", "notebook": "04_train_lora", "cell": 12,
                                                         "error": "04_train_lora: cell 12 raised ValueError"}))
    else:
        (run_dir / "status.json").write_text(json.dumps({"state": "done"}))
        (run_dir / "metrics" / "04_train_lora.json").write_text(json.dumps(
            {"brain.acc": acc, "brain.n": 10, "brain.d": acc - 0.5, "brain.d_lo": acc - 0.6, "brain.d_hi": acc - 0.4}))
    (run_dir / "metrics" / "07_evaluate.json").write_text(json.dumps(
        {"brain.sex.accuracy": acc, "brain.sex.accuracy_ci_low": acc - 0.1, "brain.sex.accuracy_ci_high": acc + 0.1}))
    return run_dir


def test_the_page_leads_with_expectations_then_headline_metrics_and_names_what_is_missing(tmp_path):
    runs = [study_run(tmp_path, f"lr={lr}_seed={seed}", {"brain_lr": lr, "seed": seed}, acc, failed)
            for lr, seed, acc, failed in ((0.001, 0, 0.6, False), (0.001, 1, 0.8, False),
                                          (0.002, 0, 0.9, False), (0.002, 1, 0.9, True))]
    page = compare_runs(runs, tmp_path / "cmp").read_text()
    expectations = pd.read_csv(tmp_path / "cmp" / "expectations.csv")
    failed = expectations[expectations["run"] == "lr=0.002_seed=1"].set_index("metric")
    assert failed.loc["brain.acc", "why"] == "04_train_lora failed" and pd.isna(failed.loc["brain.acc", "held"])
    assert page.index("<h2>Expectations") < page.index("<h2>Headline metrics") < page.index("<summary>All ")
    assert "1 of 2 held</b><div>0.7 ± 0.1414 · min 0.6</div>" in page  # the seeds of brain_lr=0.001
    assert "seed 1: — not measured: 04_train_lora failed" in page
    assert "5 of 8 checks held" in page  # 2 rules x 4 runs: the failed run measured neither
    headline = page[page.index("<h2>Headline metrics"):page.index("<summary>All ")]
    for metric in ("brain.acc", "brain.d", "brain.sex.accuracy"):  # named by a rule (d by d_lo), or an interval
        assert f"<td>{metric}</td>" in headline and (tmp_path / "cmp" / "figures" / f"{metric}.png").is_file()
    assert "brain.n<" not in headline and not (tmp_path / "cmp" / "figures" / "brain.n.png").exists()
    assert "missing in lr=0.002_seed=1 (07_evaluate not run: needs 04)" in headline
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert "lr=0.002_seed=1" not in set(table["run"])  # its 07 metrics file is an earlier run's: left out
    assert ("Note: run lr=0.002_seed=1 failed (notebook 04_train_lora, cell 12); 07_evaluate not run: needs 04; "
            "metrics come from the notebooks that finished") in page


def test_group_by_must_be_a_key_that_differs_and_folders_must_be_runs(tmp_path):
    runs = [make_run(tmp_path, f"s{seed}", {"seed": seed, "brain_lr": 0.001}, {"brain.acc": 0.5})
            for seed in (0, 1)]
    with pytest.raises(CompareError, match=r"--group-by brain_lr: .*differ at most in seed"):
        compare_runs(runs, tmp_path / "cmp", group_by="brain_lr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareError, match=r"empty: not a run folder \(no provenance.json\)"):
        compare_runs([tmp_path / "empty"], tmp_path / "cmp")


def brainvlm(*args: str) -> subprocess.CompletedProcess:
    """Run the command line; on a timeout end its process group too (the sweep's current run)."""
    process = subprocess.Popen([sys.executable, "-m", "brainvlm", *args], cwd=PROJECT_ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = process.communicate(timeout=SWEEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"brainvlm {' '.join(args)} ran past {SWEEP_TIMEOUT_S} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.slow
def test_a_local_sweep_runs_compares_resumes_and_refuses_changed_params(tmp_path):
    base = {**yaml.safe_load((PARAMS_DIR / "ci.yaml").read_text()), **CHEAPER}
    base["tasks"] = [task for task in base["tasks"] if task["name"] == "sex"]
    del base["brain_task_overrides"]  # of the bmi task, which these runs leave out
    params = tmp_path / "ci_cheaper.yaml"
    params.write_text(yaml.safe_dump(base, sort_keys=False))
    reports = tmp_path / "reports"
    args = ["sweep", "--params", str(params), "--seeds", "0,1",
            "--only", "01,04", "--name", "local", "--reports-dir", str(reports)]
    out = brainvlm(*args)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    folder = reports / "local"
    names = ["seed=0", "seed=1"]
    assert list(json.loads((folder / "sweep.json").read_text())["runs"]) == names
    for name in names:
        run_dir = folder / "runs" / name
        assert json.loads((run_dir / "status.json").read_text())["state"] == "done"
        assert (run_dir / "index.html").is_file() and (run_dir / "metrics" / "04_train_lora.json").is_file()
        assert yaml.safe_load((folder / "params" / f"{name}.yaml").read_text())["seed"] == int(name[-1])

    table = pd.read_csv(folder / "compare" / "compare.csv")
    assert sorted(table["run"].unique()) == sorted(names)
    difference = table[table["metric"] == "brain.test_minus_shuffled_images_accuracy"]
    assert len(difference) == 2 and difference["lo"].notna().all() and difference["hi"].notna().all()  # 04's
    n_train = table[table["metric"] == "brain.sex.n_train"]
    assert n_train["group"].nunique() == 1 and list(n_train["seeds_n"]) == [2, 2]
    assert n_train["seeds_mean"].iloc[0] == pytest.approx(n_train["value"].mean())
    assert (folder / "compare" / "figures" / "brain.test_minus_shuffled_images_accuracy.png").is_file()

    again = brainvlm(*args)
    assert again.returncode == 0 and "2 done (skipped)" in again.stdout and "0 to run" in again.stdout
    status = brainvlm("sweep", "--status", "--name", "local", "--reports-dir", str(reports))
    assert "2 runs: 2 done" in status.stdout, status.stdout

    params.write_text(yaml.safe_dump({**base, "brain_max_new_tokens": 5}, sort_keys=False))
    changed = brainvlm(*args)
    assert changed.returncode == 1
    assert "have changed since" in changed.stderr and "brain_max_new_tokens" in changed.stderr, changed.stderr
    assert "seed=0: brain_max_new_tokens" in changed.stderr
