"""Notebook 05's training beside other CPU-bound processes: threads chosen by brainvlm against torch's default.

A run that shares the machine should slow down about in proportion to the share it gets, not several times
more. The workload is notebook 05's training at its default size (the report study's model, batch and
curriculum from ``params/default.yaml`` and the notebook's parameters cell) for ``--steps`` optimizer steps,
in a fresh process each time. It runs alone, beside one and beside two un-niced busy processes
(``python -c 'while 1: pass'``), two ways:

* **chosen**: the environment brainvlm gives a run (``core.threads``: threads = cores available to the
  process, OpenMP threads that spin briefly before they sleep, no tokenizer pool);
* **torch default**: none of that (torch's own thread count, libgomp's long spinning waits).

Each slowdown is printed against the same way alone, measured in the same run; every time is the median of
``--repeats`` runs (one run beside busy processes moves by 10-20 % with what else the machine does).

    python benchmarks/bench_contention.py [--steps 120] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PREPARE = """
import json, sys
from pathlib import Path
from brainvlm.app.params import complete_params, find_notebook, read_params
from brainvlm.core.paths import PARAMS_DIR
from brainvlm.studies import report
run_dir = Path(sys.argv[1])
params = complete_params(find_notebook("05"), read_params(PARAMS_DIR / "default.yaml"))
source = report.DataSource(params["report_reports_table"], params["report_curriculum_files"],
                           params["report_image_root"], params["report_ehr_context"], params["report_chexpert_dict"],
                           params["report_ehr_columns"], params["report_prompt_a"], params["report_prompt_b"],
                           params["report_n_patients"], params["report_image_size"])
records, image_root, joins = report.load_records(source, run_dir / "data" / "cxr", params["seed"], progress=False)
samples = report.to_samples(report.split_records(records, tuple(params["report_split_fractions"]), params["seed"]),
                            "cxr", joins)
report.write_data(samples, run_dir / "data" / params["report_task"], image_root)
(run_dir / "params.json").write_text(json.dumps(params))
"""

TRAIN = """
import json, sys, time
from pathlib import Path
run_dir, steps = Path(sys.argv[1]), int(sys.argv[2])
from brainvlm.studies import report
from brainvlm.train.fit import TrainingInterrupted
params = json.loads((run_dir / "params.json").read_text())
start = time.perf_counter()
try:
    report.train(params, params["report_task"], run_dir, name="bench", stop_after=steps, progress=False)
except TrainingInterrupted:
    pass
import torch
print(json.dumps({"seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}))
"""

BUSY = "while 1: pass"
CONTROLLED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
              "TOKENIZERS_PARALLELISM")


def environment(way: str) -> dict[str, str]:
    """The training process's environment: brainvlm's chosen threads, or none of its settings."""
    from brainvlm.core.threads import choose_threads, thread_environment

    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    env["PYTHONPATH"] = str(ROOT)
    if way == "chosen":
        env.update(thread_environment(choose_threads()))
    return env


def train_seconds(run_dir: Path, steps: int, way: str, busy: int) -> tuple[float, int]:
    """Wall time of ``steps`` training steps with ``busy`` busy processes beside it; and torch's threads."""
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
    try:
        shutil.rmtree(run_dir / "models" / "bench", ignore_errors=True)
        done = subprocess.run([sys.executable, "-c", TRAIN, str(run_dir), str(steps)], env=environment(way),
                              capture_output=True, text=True, check=False)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    if done.returncode != 0:
        raise SystemExit(f"training ({way}, beside {busy}) failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["seconds"], result["threads"]


def median_seconds(run_dir: Path, steps: int, way: str, busy: int, repeats: int) -> tuple[float, int]:
    """The median wall time of ``repeats`` measurements (``train_seconds``), and torch's threads."""
    runs = [train_seconds(run_dir, steps, way, busy) for _ in range(max(1, repeats))]
    return statistics.median(seconds for seconds, _ in runs), runs[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (the median is printed)")
    args = parser.parse_args()
    from brainvlm.core.threads import available_cores

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        subprocess.run([sys.executable, "-c", PREPARE, str(run_dir)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                       check=True, capture_output=True)
        train_seconds(run_dir, 2, "chosen", 0)  # the base checkpoint is built once, outside the timings
        print(f"notebook 05's training, {args.steps} steps; {available_cores()} cores available")
        for way in ("chosen", "torch default"):
            alone, threads = median_seconds(run_dir, args.steps, way, 0, args.repeats)
            line = [f"{way:>13} ({threads} threads): alone {alone:6.1f} s"]
            for busy in (1, 2):
                seconds, _ = median_seconds(run_dir, args.steps, way, busy, args.repeats)
                line.append(f"beside {busy}: {seconds:6.1f} s = {seconds / alone:4.2f}x")
            print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
