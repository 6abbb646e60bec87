"""Each study's notebooks on the embedded default, run as stored (as JupyterLab's Run All does), timed against
the budget a study's notebook has alone on 2 CPU cores (3 minutes), and the whole default against `make run`'s
15 minutes. Per-notebook times live here, not in the tests: a test's time depends on what else the machine runs.

    python benchmarks/bench_notebooks.py [--only 05,06]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STUDY_BUDGET_S = 180.0
RUN_BUDGET_S = 15 * 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="01,02,03,04,05,06,07,08", help="notebook numbers, in run order")
    args = parser.parse_args()
    import papermill

    from brainvlm.app.params import find_notebook
    from brainvlm.core.paths import NOTEBOOKS_DIR

    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BRAINVLM_REPORTS_DIR"] = tmp
        for number in args.only.split(","):
            nb = find_notebook(number)
            start = time.perf_counter()
            papermill.execute_notebook(str(nb.path.with_suffix(".ipynb")), str(Path(tmp) / f"{nb.name}.ipynb"),
                                       cwd=str(NOTEBOOKS_DIR), progress_bar=False)
            seconds = time.perf_counter() - start
            total += seconds
            print(f"{nb.name:<34} {seconds:6.1f} s = {seconds / STUDY_BUDGET_S:4.2f}x the {STUDY_BUDGET_S:.0f} s "
                  f"budget of a study notebook", flush=True)
    print(f"{'all':<34} {total:6.1f} s = {total / RUN_BUDGET_S:4.2f}x make run's {RUN_BUDGET_S:.0f} s")


if __name__ == "__main__":
    main()
