"""Cost of a progress bar that redraws on every training step, in a notebook executed by papermill.

A training loop updates its bar once per step. Inside a kernel, ``tqdm.auto`` is the notebook widget, and each
redraw is a message the kernel sends and the runner's papermill client handles (on another core). ``set_postfix``
redraws by default; with ``refresh=False`` the bar redraws at most every ``mininterval`` (0.1 s), as
``brainvlm.train.fit`` does. The same loop runs in two papermill executions, one per way, timed from outside
(kernel start included in both); the printed difference is what the redraws cost.

    python benchmarks/bench_progress.py --steps 3600
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nbformat
import papermill

LOOP = """from tqdm.auto import tqdm
bar = tqdm(total={steps}, desc="stage")
for step in range({steps}):
    bar.set_postfix(loss=f"{{step / 7:.3f}}", refresh={refresh})
    bar.update(1)
bar.close()
"""


def run_seconds(folder: Path, steps: int, refresh: bool) -> float:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(LOOP.format(steps=steps, refresh=refresh))]
    source = folder / f"bar_{refresh}.ipynb"
    nbformat.write(notebook, source)
    start = time.perf_counter()
    papermill.execute_notebook(str(source), str(folder / f"bar_{refresh}_out.ipynb"), progress_bar=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3600, help="bar updates (notebook 06's default: 3600 steps)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        throttled = run_seconds(Path(tmp), args.steps, refresh=False)
        every = run_seconds(Path(tmp), args.steps, refresh=True)
    print(f"{args.steps} bar updates in a papermill run: redraw every step {every:.1f} s, at most every 0.1 s "
          f"{throttled:.1f} s (kernel start included in both); the redraws cost {every - throttled:.1f} s, "
          f"{1000 * (every - throttled) / args.steps:.2f} ms per step; ratio {every / throttled:.2f}x")


if __name__ == "__main__":
    main()
