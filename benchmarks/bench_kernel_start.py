"""Seconds from a notebook kernel's start to the end of its set-up cell (imports and ``open_notebook``), in a
kernel the runner started against one run by hand, which also checks the run folder against the notebook's
parameters cell (read with jupytext; through nbformat that imports jsonschema's format checkers).

Each run is a fresh ``python`` process that executes the notebook's cells up to and including the one that
calls ``open_notebook``, with or without ``BRAINVLM_RUNNER=1``; the two kinds alternate, and each one's median
is printed with their ratio. The suite starts about 30 kernels under the runner.

    python benchmarks/bench_kernel_start.py [--notebook 05_train_report_curriculum] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETUP = r'''
import json, os, sys, time
start = time.perf_counter()
cells = json.load(open(sys.argv[1]))["cells"]
namespace = {"__name__": "__main__"}
for cell in cells:
    if cell["cell_type"] != "code":
        continue
    source = "".join(cell["source"])
    if "parameters" in cell["metadata"].get("tags", []):
        source += f"\nrun_dir = {sys.argv[2]!r}"
    exec(source, namespace)
    if "open_notebook(" in source:
        break
print(json.dumps({"seconds": time.perf_counter() - start, "jupytext": "jupytext" in sys.modules}))
'''


def one_start(notebook: Path, run_dir: str, under_runner: bool) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("BRAINVLM_RUNNER", None)
    if under_runner:
        env["BRAINVLM_RUNNER"] = "1"
    done = subprocess.run([sys.executable, "-c", SETUP, str(notebook), run_dir], cwd=notebook.parent, env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebook", default="05_train_report_curriculum")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    notebook = ROOT / "notebooks" / f"{args.notebook}.ipynb"
    seconds: dict[str, list[float]] = {"runner": [], "by hand": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            for kind in ("runner", "by hand"):
                seen = one_start(notebook, str(Path(tmp) / f"run{k}"), kind == "runner")
                seconds[kind].append(seen["seconds"])
                print(f"{kind:8s} run {k + 1}: {seen['seconds']:.2f} s (jupytext imported: {seen['jupytext']})")
    runner, by_hand = (statistics.median(seconds[k]) for k in ("runner", "by hand"))
    print(f"{args.notebook}: set-up cell under the runner {runner:.2f} s, by hand {by_hand:.2f} s "
          f"(medians of {args.repeats}); by hand / runner = {by_hand / runner:.2f}x, {by_hand - runner:.2f} s a kernel")


if __name__ == "__main__":
    main()
