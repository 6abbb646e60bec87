"""What a sweep varies, checked before anything runs: the grid, the seeds, the SLURM resources, run names.

``--grid KEY=V1,V2`` gives scalars (each value read as YAML); a sweep file gives anything (``grid:`` key ->
list of values, lists of lists for list-valued keys), ``seeds:`` and ``resources:``. Every grid key must be
declared by a notebook of the run and every value must fit the type it is declared with
(``app.params.check_type``); an unknown key, a wrong type, an empty grid or a repeated value is an error
naming it. Resources are SLURM's (partition, GPUs, CPUs, memory, time, account, array parallelism), never
params keys. Run names say their values: ``brain_lr=0.0001_seed=0``.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from brainvlm.app.params import (
    RESERVED_KEYS,
    RUN_KEYS,
    Notebook,
    ParamsError,
    check_task_names,
    check_type,
    parameter_declarations,
)
from brainvlm.app.yaml_strict import read_mapping
from brainvlm.core.jsonio import dumps

SWEEP_FILE_KEYS = ("grid", "seeds", "resources")
RESOURCES = {"partition": str, "gpus": int, "cpus": int, "mem_gb": int, "time_min": int, "account": str,
             "array_parallelism": int}
LONGEST_VALUE = 40  # characters of a value in a run name; longer values are shortened with a hash
UNSAFE = re.compile(r"[^A-Za-z0-9._,=+-]")


class SweepError(ParamsError):
    """A sweep that cannot run as given; the message names the file, key or run and what to do."""


@dataclass
class SweepSpec:
    """What a sweep varies: grid key -> values (in order), seeds (None: the params' own) and resources."""

    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] | None = None
    resources: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """One point of the sweep: its name, the grid values and seed it sets, and its complete params."""

    name: str
    values: dict[str, Any]
    params: dict[str, Any]


# ------------------------------------------------------------------------------------ the spec
def parse_grid(pairs: list[str]) -> dict[str, list[Any]]:
    """``--grid KEY=V1,V2`` flags -> key -> values, each value read as YAML (``2`` is an int)."""
    grid: dict[str, list[Any]] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SweepError(f"--grid {pair!r}: write KEY=V1,V2 (e.g. --grid brain_lr=1.0e-4,2.0e-4)")
        if key in grid:
            raise SweepError(f"--grid {key} is given twice; list all its values in one flag")
        try:
            grid[key] = [yaml.safe_load(v) for v in text.split(",") if v.strip()]
        except yaml.YAMLError as exc:
            raise SweepError(f"--grid {pair!r}: a value is not YAML ({getattr(exc, 'problem', exc)}); "
                             "lists and mappings go in a sweep file (--sweep FILE.yaml)") from None
    return grid


def parse_seeds(text: str | None) -> list[int] | None:
    """``--seeds 0,1,2`` -> [0, 1, 2]; None when not given."""
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SweepError(f"--seeds {text!r}: write whole numbers separated by commas, e.g. 0,1,2") from None


def read_sweep_file(path: Path) -> SweepSpec:
    """A sweep file: ``grid:`` (key -> list of values), ``seeds:`` (list of ints), ``resources:``."""
    path = Path(path)
    data = read_mapping(path, "sweep file", f"a mapping with keys {list(SWEEP_FILE_KEYS)}", SweepError)
    unknown = sorted(set(data) - set(SWEEP_FILE_KEYS))
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {unknown}; a sweep file has {list(SWEEP_FILE_KEYS)} "
                         "(params keys go under grid:)")
    grid = data.get("grid") or {}
    if not isinstance(grid, dict):
        raise SweepError(f"{path}: grid is a mapping of params key -> list of values, got {grid!r}")
    for key, values in grid.items():
        if not isinstance(values, list):
            raise SweepError(f"{path}: grid {key} = {values!r} is not a list; write a list of values, "
                             f"e.g. {key}: [{values!r}] (a list-valued key takes a list of lists)")
    seeds = data.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not all(_is_int(s) for s in seeds)):
        raise SweepError(f"{path}: seeds = {seeds!r}; write a list of whole numbers, e.g. [0, 1, 2]")
    resources = data.get("resources") or {}
    if not isinstance(resources, dict):
        raise SweepError(f"{path}: resources is a mapping, e.g. {{partition: gpu, gpus: 1}}")
    return SweepSpec(dict(grid), seeds, dict(resources))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def combine(file_spec: SweepSpec | None, grid: dict[str, list[Any]], seeds: list[int] | None,
            resources: dict[str, Any]) -> SweepSpec:
    """The sweep file's spec with the flags: ``--grid`` keys added, ``--seeds`` and resource flags win."""
    spec = file_spec or SweepSpec()
    both = sorted(set(spec.grid) & set(grid))
    if both:
        raise SweepError(f"grid key(s) {both} are given both in the sweep file and by --grid; give each once")
    given = {k: v for k, v in resources.items() if v is not None}
    return SweepSpec({**spec.grid, **grid}, seeds if seeds is not None else spec.seeds,
                     {**spec.resources, **given})


def declarations(notebooks: list[Notebook]) -> dict[str, list[tuple[str, str | None]]]:
    """key -> (notebook, annotation) of every notebook that declares it."""
    declared: dict[str, list[tuple[str, str | None]]] = {}
    for nb in notebooks:
        for key, (annotation, _) in parameter_declarations(nb.path).items():
            declared.setdefault(key, []).append((nb.name, annotation))
    return declared


def check_spec(spec: SweepSpec, notebooks: list[Notebook], source: str) -> None:
    """Every grid key is declared by a notebook of the run, every value fits its type, nothing is empty.

    Raises:
        SweepError: naming the key or value, what was expected and what to do.
    """
    if not spec.grid and not spec.seeds:
        raise SweepError(f"{source}: the grid is empty; give --grid KEY=V1,V2, a sweep file's grid: or "
                         "--seeds 0,1,2")
    declared = declarations(notebooks)
    for key, values in spec.grid.items():
        if key == "seed":
            raise SweepError(f"{source}: seed is swept with --seeds (or seeds: in the sweep file), not grid")
        if key in RESERVED_KEYS or key in RUN_KEYS:
            raise SweepError(f"{source}: {key} cannot be swept (it is the runner's own key)")
        if key not in declared:
            raise SweepError(f"{source}: grid key {key!r}: no notebook of the run declares it "
                             f"({', '.join(nb.name for nb in notebooks)}); valid keys: "
                             f"{sorted(k for k in declared if k not in RESERVED_KEYS)}")
        if not values:
            raise SweepError(f"{source}: grid {key} has no values; give at least one")
        for value in values:
            for notebook, annotation in declared[key]:
                check_type(key, value, annotation, notebook, source=f"{source}: grid")
        if len({canonical(v) for v in values}) != len(values):
            raise SweepError(f"{source}: grid {key} repeats a value: {values!r}")
    if spec.seeds is not None:
        if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds):
            raise SweepError(f"{source}: seeds {spec.seeds!r}: give distinct whole numbers, e.g. 0,1,2")
        if "seed" not in declared:
            raise SweepError(f"{source}: seeds given, but no notebook of the run declares `seed`")
    check_resources(spec.resources, source)


def check_resources(resources: dict[str, Any], source: str) -> None:
    """Resource keys are known and of their type (``mem_gb: 16``, ``time_min: 120``)."""
    for key, value in resources.items():
        if key not in RESOURCES:
            raise SweepError(f"{source}: unknown resource {key!r}; resources: {sorted(RESOURCES)}")
        kind = RESOURCES[key]
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 1):
            raise SweepError(f"{source}: resource {key} = {value!r} is not a "
                             f"{'positive whole number' if kind is int else 'string'}")


def canonical(value: Any) -> str:
    return dumps(value)


# ------------------------------------------------------------------------------------- the runs
def expand(spec: SweepSpec, base: dict[str, Any], source: str = "sweep") -> list[Run]:
    """Every grid point times every seed, in order (the last grid key varies fastest, then the seed).

    Raises:
        SweepError: two runs that would get the same name, or task names a grid value makes clash.
    """
    keys = list(spec.grid)
    seeds: list[int | None] = list(spec.seeds) if spec.seeds is not None else [None]
    runs, names = [], {}
    for combo in itertools.product(*(spec.grid[k] for k in keys)):
        for seed in seeds:
            values = dict(zip(keys, combo, strict=True))
            if seed is not None:
                values["seed"] = seed
            name = run_name(values)
            if name in names:
                raise SweepError(f"{source}: runs {names[name]} and {values} would both be named {name!r}; "
                                 "give values that differ after a file name's characters are kept")
            names[name] = values
            params = {**base, **values}
            check_task_names(params, f"{source}: run {name}")
            runs.append(Run(name, values, params))
    return runs


def run_name(values: dict[str, Any]) -> str:
    """``brain_lr=0.0001_seed=0``: each value as written, kept to a file name's characters."""
    return "_".join(f"{key}={value_text(value)}" for key, value in values.items())


def value_text(value: Any) -> str:
    """A value in a run name: floats as Python writes them, lists joined by commas, long values hashed."""
    text = UNSAFE.sub("-", plain_text(value))
    if len(text) > LONGEST_VALUE:
        digest = hashlib.sha256(canonical(value).encode()).hexdigest()[:8]
        text = f"{text[:LONGEST_VALUE - 9]}~{digest}"
    return text


def plain_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(plain_text(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}-{plain_text(v)}" for k, v in value.items())
    return "none" if value == "" or value is None else str(value)


def params_hash(params: dict[str, Any]) -> str:
    """SHA-256 of params as canonical JSON (key order and YAML layout do not change it)."""
    return hashlib.sha256(canonical(params).encode()).hexdigest()

