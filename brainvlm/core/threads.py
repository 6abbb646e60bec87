"""How many threads torch may use: the cores this process may really run on, or what the user asked for.

``os.cpu_count()`` counts the machine's cores, not this process's: a CPU affinity mask (``taskset``, SLURM's
``--cpus-per-task``) or a cgroup quota (containers, ``systemd-run -p CPUQuota``) leaves fewer. More torch
threads than cores oversubscribe the CPU, and OpenMP threads that spin while they wait take turns from every
other process on the machine. So a run uses

1. the count the user gave (``--threads``, a ``threads`` argument), else
2. ``OMP_NUM_THREADS`` when set (the OpenMP convention, also what SLURM jobs and clusters set), else
3. the cores available to this process: its affinity mask, capped by its cgroup CPU quota;

and its OpenMP threads spin only briefly before they sleep while they wait (``GOMP_SPINCOUNT=5000``, libgomp's
setting: torch's Linux wheels use libgomp, whose default spins 300,000 times). Spinning threads take turns from
every other process on the machine; threads that sleep at once (``OMP_WAIT_POLICY=PASSIVE``) wake too slowly
for a small model's many short parallel regions. ``benchmarks/bench_contention.py`` measures both sides:
notebook 05's training on 2 cores, 60 steps (medians of 3 runs): with these settings 1.84x slower beside one
busy process and 2.25x beside two; with torch's own settings 4.00x and 3.18x (PASSIVE: 1.8x slower alone).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
SPIN_COUNT = "5000"  # libgomp's spins before a waiting thread sleeps (its default: 300,000); see above


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 ``cpu.max`` or v1 ``cfs_quota_us``); None: no quota."""
    candidates = [(root / "cpu.max", None)]
    candidates.append((root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"))
    candidates.append((root / "cpu,cpuacct" / "cpu.cfs_quota_us", root / "cpu,cpuacct" / "cpu.cfs_period_us"))
    for quota_file, period_file in candidates:
        try:
            if period_file is None:
                quota, period = quota_file.read_text().split()[:2]
            else:
                quota, period = quota_file.read_text().strip(), period_file.read_text().strip()
        except (OSError, ValueError):
            continue
        if quota in ("max", "-1"):
            return None
        try:
            return max(int(quota) / int(period), 0.0) or None
        except (ValueError, ZeroDivisionError):
            continue
    return None


def available_cores() -> int:
    """Cores this process may run on: its affinity mask, capped by its cgroup CPU quota (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def choose_threads(requested: int | None = None) -> int:
    """The thread count of a run: ``requested`` (> 0), else ``OMP_NUM_THREADS``, else the available cores."""
    if requested is not None and requested > 0:
        return int(requested)
    return _positive_int(os.environ.get("OMP_NUM_THREADS")) or available_cores()


def thread_environment(threads: int) -> dict[str, str]:
    """Environment for a process started with ``threads`` threads: OpenMP/BLAS counts, short spinning waits,
    and no thread pool of the tokenizers (they encode one short text at a time here)."""
    env = {name: str(threads) for name in THREAD_VARIABLES}
    env["GOMP_SPINCOUNT"] = SPIN_COUNT
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def use_threads(threads: int | None = None) -> int:
    """Set this process's thread count (see the module docstring); returns it.

    Environment variables reach libraries loaded after this call (libgomp reads ``GOMP_SPINCOUNT`` when torch
    loads it); torch, if loaded, gets ``set_num_threads``. Variables the user already set are kept.
    """
    chosen = choose_threads(threads)
    for name, value in thread_environment(chosen).items():
        if threads is not None and name in THREAD_VARIABLES:
            os.environ[name] = value
        else:
            os.environ.setdefault(name, value)
    import sys
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(chosen)
    return chosen
