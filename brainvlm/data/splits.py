"""Subject- and group-disjoint train/val/test splits with disjoint query and reference pools inside each.

Splitting happens at the level of groups (families; a group is the subject itself when there are no
families), so relatives never end up on both sides of a split or of a pool. Groups are stratified by
class (categorical targets: the group's most common class) or by quantile bin of the group's mean target
(numerical targets), and the result depends only on the cohort's content and ``seed``, never on its row
order.

How groups are dealt out: groups are ordered by stratum, randomly inside a stratum (``default_rng(seed)``),
and walked in that order; each goes to the split whose subject count lags its target share the most.
Walking stratum after stratum this way cuts every stratum in the requested proportions (to within one
group). Every split needs at least one query and one reference group, so a split still short of two
groups takes the last groups when no more are left to spare.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
POOLS = ("query", "reference")
ASSIGNMENT_COLUMNS = ("subject", "group", "split", "pool")
MAX_LISTED = 10  # how many offending subjects an error names


class SplitError(ValueError):
    """Splits cannot be made (too few groups, bad fractions) or leak subjects between splits or pools."""


# ------------------------------------------------------------------------------------------- checks
def _check_fractions(fractions: Sequence[float], reference_fraction: float) -> tuple[float, ...]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != len(SPLITS):
        raise SplitError(f"split fractions: need {len(SPLITS)} values for {'/'.join(SPLITS)}, "
                         f"got {len(fractions)}: {list(fractions)}")
    if any(not f > 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise SplitError(f"split fractions must be positive and sum to 1, got {list(fractions)} "
                         f"(sum {sum(fractions):.6g}); e.g. [0.7, 0.15, 0.15]")
    if not 0.0 < reference_fraction < 1.0:
        raise SplitError(f"reference_fraction must be between 0 and 1 (exclusive), got {reference_fraction}; "
                         "it is the share of each split's subjects used as references (e.g. 0.5)")
    return fractions


def _check_cohort(cohort: pd.DataFrame, task_type: str) -> pd.DataFrame:
    """The cohort's ``subject``, ``group``, ``target`` as a frame sorted by subject (group defaults to subject)."""
    if task_type not in ("categorical", "numerical"):
        raise SplitError(f"task_type must be 'categorical' or 'numerical', got {task_type!r}")
    missing = [c for c in ("subject", "target") if c not in cohort.columns]
    if missing:
        raise SplitError(f"cohort lacks column(s) {missing}; it needs subject, group and target "
                         f"(columns present: {list(cohort.columns)})")
    frame = pd.DataFrame({"subject": cohort["subject"].astype(str)})
    frame["group"] = cohort["group"].astype(str) if "group" in cohort.columns else frame["subject"]
    frame["target"] = cohort["target"].to_numpy()
    duplicated = sorted(set(frame.loc[frame["subject"].duplicated(), "subject"]))
    if duplicated:
        raise SplitError(f"cohort has {len(duplicated)} subject(s) on more than one row: "
                         f"{duplicated[:MAX_LISTED]}; the cohort needs one row per subject")
    if task_type == "numerical":
        frame["target"] = pd.to_numeric(frame["target"], errors="coerce")
        bad = frame.loc[~np.isfinite(frame["target"].to_numpy(dtype=float)), "subject"].tolist()
        if bad:
            raise SplitError(f"numerical target is missing or not a finite number for {len(bad)} subject(s): "
                             f"{sorted(bad)[:MAX_LISTED]}; exclude them in the cohort step")
    else:
        frame["target"] = frame["target"].astype(str)
    return frame.sort_values("subject", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------- strata
def _group_strata(frame: pd.DataFrame, task_type: str, n_bins: int) -> pd.DataFrame:
    """One row per group (sorted by name): ``group``, ``size`` and ``stratum`` (int)."""
    groups = frame.groupby("group", sort=True)
    table = pd.DataFrame({"size": groups.size()})
    if task_type == "categorical":
        counts = frame.groupby(["group", "target"], sort=True).size().rename("n").reset_index()
        # most common class per group; ties go to the alphabetically first class (stable sort)
        top = counts.sort_values(["group", "n"], ascending=[True, False], kind="stable").drop_duplicates("group")
        classes = {c: i for i, c in enumerate(sorted(frame["target"].unique()))}
        table["stratum"] = top.set_index("group")["target"].map(classes)
    else:
        if n_bins < 1:
            raise SplitError(f"n_bins must be at least 1, got {n_bins}")
        means = groups["target"].mean()
        order = np.lexsort((means.index.to_numpy(dtype=str), means.to_numpy(dtype=float)))
        ranks = np.empty(len(means), dtype=int)
        ranks[order] = np.arange(len(means))
        table["stratum"] = ranks * n_bins // len(means)
    return table.reset_index()


def _deal(sizes: np.ndarray, shares: Sequence[float], minimum: int) -> np.ndarray:
    """Give each item (in order) to the bin whose count lags its share most; every bin gets ``minimum`` items.

    Args:
        sizes: subjects per item (group), in dealing order.
        shares: target share of subjects per bin (sums to 1).
        minimum: items each bin must receive.

    Returns:
        The bin index of each item.
    """
    shares = np.asarray(shares, dtype=float)
    counts = np.zeros(len(shares))
    items = np.zeros(len(shares), dtype=int)
    out = np.empty(len(sizes), dtype=int)
    for i, size in enumerate(sizes):
        short = np.maximum(minimum - items, 0)
        lag = shares * (counts.sum() + size) - counts
        if short.sum() >= len(sizes) - i:  # the rest must fill the bins still below the minimum
            lag = np.where(short > 0, lag, -np.inf)
        chosen = int(np.argmax(lag))
        out[i] = chosen
        counts[chosen] += size
        items[chosen] += 1
    return out


def _dealing_order(strata: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Row positions of ``strata`` ordered by stratum, randomly inside each stratum."""
    random_key = rng.permutation(len(strata))
    return np.lexsort((random_key, strata["stratum"].to_numpy()))


# ------------------------------------------------------------------------------------------- split
def split_subjects(cohort: pd.DataFrame, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0,
                   task_type: str = "categorical", n_bins: int = 4,
                   reference_fraction: float = 0.5) -> pd.DataFrame:
    """Assign every subject a split (train/val/test) and a pool (query/reference), group-disjoint.

    Args:
        cohort: one row per subject with ``subject``, ``group`` (optional: defaults to the subject) and
            ``target`` (class label, or a number for numerical tasks).
        fractions: share of subjects for train, val and test; positive, summing to 1.
        seed: the seed; the same cohort (in any row order) and seed give the same assignment.
        task_type: ``categorical`` stratifies by class, ``numerical`` by quantile bin of the target.
        n_bins: quantile bins of a numerical target.
        reference_fraction: share of each split's subjects placed in the reference pool.

    Returns:
        ``subject``, ``group``, ``split``, ``pool``, one row per subject, sorted by subject.

    Raises:
        SplitError: bad fractions, duplicate subjects, or fewer than 6 groups (3 splits x 2 pools).
    """
    fractions = _check_fractions(fractions, reference_fraction)
    frame = _check_cohort(cohort, task_type)
    strata = _group_strata(frame, task_type, n_bins)
    needed = len(SPLITS) * len(POOLS)
    if len(strata) < needed:
        raise SplitError(f"need at least {needed} groups for {len(SPLITS)} splits with query and reference "
                         f"pools, got {len(strata)} (from {len(frame)} subjects)")
    rng = np.random.default_rng(seed)
    order = _dealing_order(strata, rng)
    split_of = np.empty(len(strata), dtype=int)
    split_of[order] = _deal(strata["size"].to_numpy()[order], fractions, minimum=len(POOLS))
    pool_of = np.empty(len(strata), dtype=int)
    for index in range(len(SPLITS)):  # pools inside each split: same dealing, own random order
        members = np.flatnonzero(split_of == index)
        part = strata.iloc[members]
        local = _dealing_order(part, rng)
        pool_of[members[local]] = _deal(part["size"].to_numpy()[local],
                                        (1.0 - reference_fraction, reference_fraction), minimum=1)
    by_group = pd.DataFrame({"group": strata["group"], "split": np.array(SPLITS)[split_of],
                             "pool": np.array(POOLS)[pool_of]})
    out = frame[["subject", "group"]].merge(by_group, on="group", how="left")
    return out.sort_values("subject", kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------- audit
def _crossing(assignment: pd.DataFrame, key: str, within: list[str], column: str) -> list[str]:
    """Values of ``key`` that take more than one value of ``column`` (inside each ``within`` cell)."""
    counts = assignment.groupby([*within, key], sort=True)[column].nunique()
    return sorted({str(k[-1]) if isinstance(k, tuple) else str(k) for k in counts[counts > 1].index})


def _listed(values: list[str]) -> str:
    more = f" and {len(values) - MAX_LISTED} more" if len(values) > MAX_LISTED else ""
    return ", ".join(values[:MAX_LISTED]) + more


def audit_splits(assignment: pd.DataFrame) -> pd.DataFrame:
    """The leakage audit a notebook shows: one row per check with ``check``, ``passed`` and ``detail``.

    Checks: known split and pool names, every subject on one row, no subject in two splits, no group in
    two splits, no subject in both pools, no group in both pools of a split, every split has both pools.
    """
    missing = [c for c in ASSIGNMENT_COLUMNS if c not in assignment.columns]
    if missing:
        raise SplitError(f"assignment lacks column(s) {missing}; expected {list(ASSIGNMENT_COLUMNS)}")
    a = assignment.astype({"subject": str, "group": str, "split": str, "pool": str})
    unknown = sorted(set(a["split"]) - set(SPLITS)) + sorted(set(a["pool"]) - set(POOLS))
    repeated = sorted(set(a.loc[a["subject"].duplicated(), "subject"]))
    checks = [
        ("known split and pool names", unknown, "unknown: "),
        ("every subject assigned once", repeated, "subjects on several rows: "),
        ("no subject in two splits", _crossing(a, "subject", [], "split"), "subjects: "),
        ("no group in two splits", _crossing(a, "group", [], "split"), "groups: "),
        ("no subject in both pools", _crossing(a, "subject", ["split"], "pool"), "subjects: "),
        ("no group in both pools of a split", _crossing(a, "group", ["split"], "pool"), "groups: "),
    ]
    rows = [{"check": name, "passed": not bad, "detail": prefix + _listed(bad) if bad else "none"}
            for name, bad, prefix in checks]
    present = set(zip(a["split"], a["pool"]))
    lacking = [f"{s}/{p}" for s in SPLITS for p in POOLS if (s, p) not in present]
    rows.append({"check": EMPTY_POOL_CHECK, "passed": not lacking,
                 "detail": "empty: " + ", ".join(lacking) if lacking else "none"})
    return pd.DataFrame(rows, columns=["check", "passed", "detail"])


def audit_across_tasks(assignments: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The audit over all tasks of a cohort: a subject (or group) has one split and one pool in every task.

    Returns:
        ``check``, ``passed``, ``detail`` rows, like :func:`audit_splits`.
    """
    if not assignments:
        return pd.DataFrame(columns=["check", "passed", "detail"])
    rows = pd.concat([a.assign(task=name) for name, a in assignments.items()], ignore_index=True)
    a = rows.astype({"subject": str, "group": str, "split": str, "pool": str})
    checks = [("across tasks: no subject in two splits", _crossing(a, "subject", [], "split"), "subjects: "),
              ("across tasks: no group in two splits", _crossing(a, "group", [], "split"), "groups: "),
              ("across tasks: no subject in both pools", _crossing(a, "subject", ["split"], "pool"), "subjects: ")]
    return pd.DataFrame([{"check": name, "passed": not bad, "detail": prefix + _listed(bad) if bad else "none"}
                         for name, bad, prefix in checks], columns=["check", "passed", "detail"])


EMPTY_POOL_CHECK = "every split has both pools"


def assert_disjoint(assignment: pd.DataFrame, where: str = "") -> None:
    """Raise :class:`SplitError` naming the offending subjects if any audit check fails.

    Args:
        where: names the assignment in the message (``"pheno.tsv: task 'bmi'"``).

    The message says what failed: subjects or groups that leak between splits or pools, or a split whose
    query or reference pool is empty (nothing leaks then: too few subjects are left there).
    """
    audit = audit_splits(assignment)
    failed = audit[~audit["passed"]]
    if failed.empty:
        return
    a = assignment.astype({"subject": str, "group": str})
    lines = []
    for check, detail in zip(failed["check"], failed["detail"]):
        if detail.startswith("groups: "):  # name the subjects of the offending groups
            groups = set(_crossing(a, "group", ["split"] if "pools" in check else [],
                                   "pool" if "pools" in check else "split"))
            subjects = sorted(a.loc[a["group"].isin(groups), "subject"])
            detail = f"{detail}; their subjects: {_listed(subjects)}"
        lines.append(f"{check}: FAILED ({detail})")
    prefix = f"{where}: " if where else ""
    if list(failed["check"]) == [EMPTY_POOL_CHECK]:
        empty = failed["detail"].item().removeprefix("empty: ")
        raise SplitError(f"{prefix}split assignment leaves {empty} without subjects ({len(a)} subjects in all); "
                         "every split needs a query and a reference pool: add subjects, or exclude fewer")
    raise SplitError(f"{prefix}split assignment leaks subjects:\n  " + "\n  ".join(lines))


def split_counts(assignment: pd.DataFrame, cohort: pd.DataFrame) -> pd.DataFrame:
    """Subjects and groups per split and pool, with per-class counts or the target's mean and std.

    Returns:
        One row per (split, pool) in train/val/test x query/reference order; columns ``split``, ``pool``,
        ``subjects``, ``groups`` and ``n_<class>`` per class (categorical) or ``target_mean``,
        ``target_std`` (numerical: a numeric ``target`` column).
    """
    merged = assignment[["subject", "split", "pool", "group"]].astype({"subject": str}).merge(
        cohort[["subject", "target"]].astype({"subject": str}), on="subject", how="left")
    numerical = pd.api.types.is_numeric_dtype(cohort["target"])
    classes = [] if numerical else sorted(merged["target"].dropna().astype(str).unique())
    rows = []
    for split in SPLITS:
        for pool in POOLS:
            part = merged[(merged["split"] == split) & (merged["pool"] == pool)]
            row = {"split": split, "pool": pool, "subjects": len(part), "groups": part["group"].nunique()}
            if numerical:
                row.update(target_mean=float(part["target"].mean()), target_std=float(part["target"].std()))
            else:
                row.update({f"n_{c}": int((part["target"].astype(str) == c).sum()) for c in classes})
            rows.append(row)
    return pd.DataFrame(rows)
