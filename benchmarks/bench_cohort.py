"""Seconds to build the synthetic cohort: one process vs one per core (``build_workers``).

Both builds run in this invocation on the same machine, and their files are compared byte for byte, so the
printed ratio compares like with like.

    python benchmarks/bench_cohort.py                       # the embedded default: 300 subjects at 64^3
    python benchmarks/bench_cohort.py --n 40 --size 32      # a quick run
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from brainvlm.data import synthetic_brain


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def build_seconds(folder: Path, n: int, size: int, workers: int) -> float:
    start = time.perf_counter()
    synthetic_brain.make_synthetic_cohort(folder, n_subjects=n, shape=(size,) * 3, workers=workers, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="subjects")
    parser.add_argument("--size", type=int, default=64, help="volume edge in voxels")
    args = parser.parse_args()
    workers = synthetic_brain.build_workers(args.n, (args.size,) * 3)
    with tempfile.TemporaryDirectory() as tmp:
        one = build_seconds(Path(tmp) / "one", args.n, args.size, 1)
        many = build_seconds(Path(tmp) / "many", args.n, args.size, max(workers, 2))
        same = digest(Path(tmp) / "one") == digest(Path(tmp) / "many")
    print(f"{args.n} subjects at {args.size}^3: 1 process {one:.1f} s, {max(workers, 2)} processes {many:.1f} s, "
          f"ratio {one / many:.2f}x; files identical: {same}; build_workers picks {workers}")


if __name__ == "__main__":
    main()
