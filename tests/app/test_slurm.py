"""A sweep on a real SLURM: a one-node cluster on localhost (``slurm_cluster``), no accounting database.

The sweep of ``--only 01`` on params/ci.yaml (two values of ``n_subjects``, one seed, array parallelism 1)
is submitted through submitit as a job array, waited for through run folders and ``squeue``, and both runs'
reports are checked; then ``--status`` and a submission that sbatch refuses. Needs Debian's slurm-wlm and
munge and root (``.ci/run`` installs the packages); elsewhere the test fails and says so.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import slurm_cluster  # tests/app/slurm_cluster.py, beside this file

from brainvlm.core.paths import PARAMS_DIR, PROJECT_ROOT

SWEEP_TIMEOUT_S = 150


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = slurm_cluster.requirements_missing()
    if missing:
        pytest.fail(missing)
    running = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    yield running
    slurm_cluster.stop(running)


def brainvlm_sweep(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "brainvlm", "sweep", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S, check=False)


@pytest.mark.slow
def test_a_sweep_runs_as_a_job_array_and_its_state_comes_from_run_folders_and_squeue(cluster, tmp_path):
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("resources: {array_parallelism: 1, cpus: 1, time_min: 10}\n")
    reports = tmp_path / "reports"
    args = ["--params", str(PARAMS_DIR / "ci.yaml"), "--grid", "n_subjects=40,48", "--seeds", "0",
            "--only", "01", "--sweep", str(sweep_file), "--executor", "slurm", "--name", "cluster",
            "--reports-dir", str(reports)]
    out = brainvlm_sweep([*args, "--wait"], cluster.env)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{cluster.log_tail()}"
    assert "submitted 2 runs to SLURM" in out.stdout
    assert "1 pending, 1 running" in out.stdout, out.stdout  # array parallelism 1, seen through squeue

    folder = reports / "cluster"
    jobs = json.loads((folder / "jobs.json").read_text())
    array = {job["job_id"].split("_")[0] for job in jobs.values()}
    assert len(array) == 1 and sorted(j["job_id"].split("_")[1] for j in jobs.values()) == ["0", "1"]
    samples = []
    for n_subjects in (40, 48):
        run_dir = folder / "runs" / f"n_subjects={n_subjects}_seed=0"
        status = json.loads((run_dir / "status.json").read_text())
        assert status["state"] == "done" and status["slurm_job"] in {j["job_id"] for j in jobs.values()}
        assert json.loads((run_dir / "provenance.json").read_text())["params"]["n_subjects"] == n_subjects
        metrics = json.loads((run_dir / "metrics" / "01_generate_data.json").read_text())
        samples.append(sum(metrics[f"brain.sex.n_{split}"] for split in ("train", "val", "test")))
        assert (run_dir / "01_generate_data.html").is_file() and (run_dir / "index.html").is_file()
    assert samples[0] < samples[1], samples  # each grid value reached its run on the node
    assert (folder / "compare" / "index.html").is_file()

    status = brainvlm_sweep(["--status", "--name", "cluster", "--reports-dir", str(reports)], cluster.env)
    assert status.returncode == 0, status.stderr
    assert "2 runs: 2 done" in status.stdout and status.stdout.count(" done ") >= 2, status.stdout

    again = brainvlm_sweep(args, cluster.env)  # everything done: nothing is submitted
    assert again.returncode == 0 and "2 done (skipped)" in again.stdout and "submitted" not in again.stdout


def test_a_refused_submission_shows_sbatch_s_own_message(cluster, tmp_path):
    out = brainvlm_sweep(["--params", str(PARAMS_DIR / "ci.yaml"), "--grid", "n_subjects=40", "--only", "01",
                          "--executor", "slurm", "--partition", "nosuch", "--name", "refused",
                          "--reports-dir", str(tmp_path)], cluster.env)
    assert out.returncode == 1
    assert "sbatch refused the sweep's jobs" in out.stderr and "invalid partition" in out.stderr, out.stderr
