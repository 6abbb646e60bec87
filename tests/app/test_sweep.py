"""Sweeps without running a notebook: grid and seed parsing, the typed check, run names, the layout,
resuming and the run states (tests/app/test_compare.py runs a real local sweep, test_slurm.py a SLURM one)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
from contextlib import redirect_stderr

import pytest
import yaml

from brainvlm.app.cli import main
from brainvlm.app.params import ParamsError, discover_notebooks, select_notebooks
from brainvlm.app.run_status import mark_ended, mark_started, read_status
from brainvlm.app.sweep import Layout, check_unchanged, run_state, state_line, write_plan
from brainvlm.app.sweep_spec import (
    SweepError,
    SweepSpec,
    check_spec,
    combine,
    expand,
    parse_grid,
    parse_seeds,
    read_sweep_file,
    run_name,
)
from brainvlm.core.paths import PARAMS_DIR

BRAIN = select_notebooks(discover_notebooks(), "01,02,03,04,07")


def test_grid_flags_read_each_value_as_yaml():
    assert parse_grid(["brain_lr=1.0e-4,2.0e-4", "n_subjects=40,48", "strict=true,false"]) == {
        "brain_lr": [1.0e-4, 2.0e-4], "n_subjects": [40, 48], "strict": [True, False]}
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds(None) is None


@pytest.mark.parametrize("flags, message", [
    (["brain_lr"], "write KEY=V1,V2"),
    (["=1,2"], "write KEY=V1,V2"),
    (["brain_lr=1.0e-4", "brain_lr=2.0e-4"], "given twice"),
])
def test_bad_grid_flags_are_errors(flags, message):
    with pytest.raises(SweepError, match=message):
        parse_grid(flags)


def test_seeds_must_be_whole_numbers():
    with pytest.raises(SweepError, match="--seeds '0,a'"):
        parse_seeds("0,a")


def test_a_sweep_file_takes_lists_and_resources(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("grid: {brain_lr: [1.0e-4, 2.0e-4], "
                    "split_fractions: [[0.7, 0.15, 0.15], [0.6, 0.2, 0.2]]}\n"
                    "seeds: [0, 1, 2]\nresources: {partition: gpu, gpus: 1, time_min: 60}\n")
    spec = read_sweep_file(path)
    assert spec.grid["split_fractions"] == [[0.7, 0.15, 0.15], [0.6, 0.2, 0.2]]
    assert spec.seeds == [0, 1, 2] and spec.resources == {"partition": "gpu", "gpus": 1, "time_min": 60}
    check_spec(spec, BRAIN, "sweep.yaml")
    merged = combine(spec, {"n_subjects": [40]}, [5], {"partition": "debug", "gpus": None})
    assert list(merged.grid) == ["brain_lr", "split_fractions", "n_subjects"] and merged.seeds == [5]
    assert merged.resources == {"partition": "debug", "gpus": 1, "time_min": 60}  # flags win
    with pytest.raises(SweepError, match=r"both in the sweep file and by --grid"):
        combine(spec, {"brain_lr": [0.1]}, None, {})


@pytest.mark.parametrize("text, message", [
    ("grid: {brain_lr: 1.0e-4}\n", r"grid brain_lr = 0.0001 is not a list"),
    ("grids: {brain_lr: [1.0e-4]}\n", r"unknown key\(s\) \['grids'\]"),
    ("seeds: [0, x]\n", r"seeds = \[0, 'x'\]"),
    ("[1, 2]\n", "a sweep file is a mapping"),
])
def test_bad_sweep_files_are_errors_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SweepError, match=message) as caught:
        read_sweep_file(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("spec, message", [
    (SweepSpec({"brain_lrate": [0.1]}), r"grid key 'brain_lrate': no notebook of the run declares it"),
    (SweepSpec({"brain_lr": ["1e-4"]}), (r"brain_lr = '1e-4' is a str, but notebook 04_train_lora declares "
                                        r"`brain_lr: float`; YAML 1.1")),
    (SweepSpec({"split_fractions": [0.7]}), r"split_fractions = 0.7 is a float.*`split_fractions: list`"),
    (SweepSpec({"n_subjects": [40, 40]}), "repeats a value"),
    (SweepSpec({"n_subjects": []}), "grid n_subjects has no values"),
    (SweepSpec(), "the grid is empty"),
    (SweepSpec({"seed": [0, 1]}), "seed is swept with --seeds"),
    (SweepSpec({"run_dir": ["x"]}), "run_dir cannot be swept"),
    (SweepSpec({}, [0, 0]), "give distinct whole numbers"),
    (SweepSpec({}, [0], {"gpu": 1}), r"unknown resource 'gpu'"),
    (SweepSpec({}, [0], {"mem_gb": "16G"}), r"resource mem_gb = '16G' is not a positive whole number"),
])
def test_every_value_is_checked_before_anything_runs(spec, message):
    with pytest.raises(ParamsError, match=message):  # SweepError, or check_type's ParamsError
        check_spec(spec, BRAIN, "sweep s")


def test_a_key_only_other_notebooks_declare_is_unknown_to_the_run():
    with pytest.raises(SweepError, match="grid key 'brain_lr'"):
        check_spec(SweepSpec({"brain_lr": [0.1]}), select_notebooks(discover_notebooks(), "01"), "sweep s")


def test_runs_are_every_grid_point_times_every_seed_named_by_their_values():
    spec = SweepSpec({"brain_lr": [1.0e-4, 2.0e-4], "split_fractions": [[0.7, 0.15, 0.15]]}, [0, 1])
    runs = expand(spec, {"seed": 7, "n_subjects": 40})
    assert [r.name for r in runs] == [f"brain_lr={lr}_split_fractions=0.7,0.15,0.15_seed={seed}"
                                      for lr in ("0.0001", "0.0002") for seed in (0, 1)]
    assert runs[1].params == {"seed": 1, "n_subjects": 40, "brain_lr": 1.0e-4,
                              "split_fractions": [0.7, 0.15, 0.15]}
    assert [r.name for r in expand(SweepSpec({"n_subjects": [40]}), {})] == ["n_subjects=40"]


def test_run_names_keep_to_file_name_characters_and_shorten_long_values():
    assert run_name({"cohort_name": "my cohort/v2", "strict": True, "image_root": ""}) == \
        "cohort_name=my-cohort-v2_strict=true_image_root=none"
    long = run_name({"tasks": [{"name": "sex", "task_type": "categorical", "target_col": "sex"}]})
    assert len(long) <= len("tasks=") + 40 and "~" in long
    with pytest.raises(SweepError, match="would both be named 'cohort_name=a-b'"):
        expand(SweepSpec({"cohort_name": ["a b", "a/b"]}), {})


def test_a_grid_value_that_makes_task_names_clash_is_an_error():
    spec = SweepSpec({"tasks": [[{"name": "x"}, {"name": "x"}]]})
    with pytest.raises(ParamsError, match="run tasks=name-x,name-x: task name 'x' appears in tasks"):
        expand(spec, {})


def sweep_layout(tmp_path, params):
    spec = SweepSpec({"brain_lr": [1.0e-4]}, [0])
    runs = expand(spec, params)
    layout = Layout(tmp_path / "s")
    write_plan(layout, spec, runs, tmp_path / "base.yaml", params, "01", "local")
    return layout, runs


def test_the_plan_writes_sweep_json_and_each_run_s_params(tmp_path):
    layout, runs = sweep_layout(tmp_path, {"n_subjects": 40})
    sweep = json.loads(layout.sweep_json.read_text())
    assert sweep["runs"] == {"brain_lr=0.0001_seed=0": {"brain_lr": 1.0e-4, "seed": 0}}
    assert sweep["only"] == "01" and len(sweep["base_params_sha256"]) == 64 and sweep["seeds"] == [0]
    assert yaml.safe_load(layout.params_file(runs[0].name).read_text()) == runs[0].params


def test_changed_params_of_runs_that_ran_are_refused_naming_the_keys(tmp_path):
    layout, runs = sweep_layout(tmp_path, {"n_subjects": 40})
    changed = expand(SweepSpec({"brain_lr": [1.0e-4]}, [0]), {"n_subjects": 48})
    check_unchanged(layout, changed, "01")  # nothing ran yet: nothing to mix
    mark_started(layout.run_dir(runs[0].name), ["01_generate_data"])
    check_unchanged(layout, runs, "01")
    with pytest.raises(SweepError, match=r"brain_lr=0.0001_seed=0: n_subjects\. Their results would mix"):
        check_unchanged(layout, changed, "01")
    with pytest.raises(SweepError, match=r"--only \(01 -> 01,02\)"):
        check_unchanged(layout, runs, "01,02")


def test_the_runner_s_status_file_gives_done_and_failed_with_notebook_and_cell(tmp_path):
    mark_started(tmp_path, ["01_generate_data"])
    status = read_status(tmp_path)
    assert status["state"] == "running" and status["pid"] == os.getpid()
    assert run_state(tmp_path, None, {})["state"] == "running"  # this process is alive
    mark_ended(tmp_path, "04_train_lora", "04_train_lora: cell 12 (execution count 9) raised ValueError: x")
    state = run_state(tmp_path, None, {})
    assert (state["state"], state["notebook"], state["cell"]) == ("failed", "04_train_lora", 12)
    assert "04_train_lora: cell 12" in state_line("r", state)
    mark_ended(tmp_path)
    assert run_state(tmp_path, None, {})["state"] == "done"


def test_a_running_status_whose_process_is_gone_is_a_failure(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "status.json").write_text(json.dumps({"state": "running", "host": socket.gethostname(),
                                                      "pid": dead.pid, "slurm_job": None}))
    assert run_state(tmp_path, {"log": "x.log"}, {})["state"] == "failed"


def test_slurm_states_come_from_the_run_folder_and_squeue(tmp_path):
    job = {"executor": "slurm", "job_id": "12_1", "log": "12_1_0_log.out"}
    assert run_state(tmp_path, job, {"12_1": "PENDING"})["state"] == "pending"
    assert run_state(tmp_path, job, {"12_1": "RUNNING"})["state"] == "running"
    left = run_state(tmp_path, job, {})
    assert left["state"] == "failed" and "left the queue before the run started" in left["error"]
    assert run_state(tmp_path, job, None)["state"] == "unknown"
    (tmp_path / "status.json").write_text(json.dumps({"state": "running", "slurm_job": "12_1"}))
    assert run_state(tmp_path, job, {"12_1": "RUNNING"})["state"] == "running"
    assert "out of time" in run_state(tmp_path, job, {})["error"]  # gone from squeue while running
    assert run_state(tmp_path / "other", None, {})["state"] == "missing"  # no job, no status: never started


def test_the_command_line_refuses_a_bad_grid_before_running_anything(tmp_path, capsys):
    code = main(["sweep", "--params", str(PARAMS_DIR / "ci.yaml"), "--grid", "brain_lr=fast",
                 "--only", "01,04", "--reports-dir", str(tmp_path)])
    assert code == 1
    assert "brain_lr = 'fast' is a str" in capsys.readouterr().err
    assert not (tmp_path / "ci_sweep").exists()


def test_status_of_a_sweep_that_does_not_exist_says_so(tmp_path):
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["sweep", "--status", "--name", "nosuch", "--reports-dir", str(tmp_path)]) == 1
    assert "no sweep.json" in err.getvalue()


def test_a_local_sweep_shows_the_notebook_lines_of_brainvlm_run():
    from brainvlm.app.console import is_notebook_line

    shown = ["[1/3] 01_generate_data               started  17:35:49", "[2/3] 04_train_lora  failed   6.4 s",
             "      04_train_lora: cell 3 (execution count 3) raised KeyError: 'x'",
             "[3/3] 07_evaluate                    not run: needs 04"]
    hidden = ["brainvlm run r: 3 notebooks (01, 04, 07) -> reports/r/", "", "      ",
              "  01_generate_data               ok               9.3 s", "report: reports/r/index.html"]
    assert [is_notebook_line(line) for line in shown + hidden] == [True] * len(shown) + [False] * len(hidden)
