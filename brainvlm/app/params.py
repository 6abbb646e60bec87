"""Params files and notebook parameter cells: the run contract's key checking.

A run is one flat YAML file. A key is valid if any notebook of the run declares it in its
``parameters`` cell; papermill only warns on unknown keys, so brainvlm checks them itself. The key
``notebooks`` (a list of numbers) is the runner's own: it names the notebooks the file runs (absent:
all). A notebook's parameters cell is the one home of its keys' defaults: the command line reads them
from there (``complete_params``), so a command and a notebook given the same file get the same values.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainvlm.app import yaml_strict
from brainvlm.core.paths import NOTEBOOKS_DIR

RESERVED_KEYS = ("run_dir",)  # injected by the runner, never read from a params file
RUN_KEYS = ("notebooks",)  # read by the runner itself, never injected into a notebook
NOTEBOOK_NAME = re.compile(r"^(\d\d[a-z]?)_[a-z0-9_]+\.py$")


class ParamsError(ValueError):
    """A params file that does not fit the notebooks of the run."""


@dataclass(frozen=True)
class Notebook:
    """One numbered notebook: its number (``01``, ``04a``), name and source path."""

    number: str
    name: str
    path: Path


def discover_notebooks(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Notebook]:
    """Numbered ``NN_name.py`` notebooks in run order."""
    found = []
    for path in sorted(Path(notebooks_dir).glob("*.py")):
        match = NOTEBOOK_NAME.match(path.name)
        if match:
            found.append(Notebook(match.group(1), path.stem, path))
    return found


def select_notebooks(notebooks: list[Notebook], only: str | None, what: str = "--only") -> list[Notebook]:
    """Keep the notebooks named in ``only`` (``"01,02"``; numbers or names); all when empty."""
    if not only:
        return notebooks
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = [nb for nb in notebooks if nb.number in wanted or nb.name in wanted]
    known = {nb.number for nb in notebooks} | {nb.name for nb in notebooks}
    missing = [w for w in wanted if w not in known]
    if missing:
        raise ParamsError(f"{what} names unknown notebooks {missing}; known: {sorted(nb.name for nb in notebooks)}")
    return chosen


def run_notebooks(params: dict[str, Any], every: list[Notebook], only: str | None,
                  source: str = "params") -> tuple[list[Notebook], list[Notebook]]:
    """The notebooks a params file runs (its ``notebooks`` key; all when absent) and those ``only`` keeps.

    Raises:
        ParamsError: ``notebooks`` that is not a list of known notebook numbers, or ``only`` naming a
            notebook the params file does not run.
    """
    named = params.get("notebooks")
    if named is None:
        mine = every
    else:
        if not isinstance(named, list) or not named or not all(isinstance(n, str) for n in named):
            raise ParamsError(f"{source}: notebooks must be a non-empty list of quoted numbers such as "
                              f'["01", "02"], got {named!r}')
        mine = select_notebooks(every, ",".join(named), f"{source}: notebooks")
    if not only:
        return mine, mine
    chosen = select_notebooks(every, only)
    outside = [nb.name for nb in chosen if nb not in mine]
    if outside:
        raise ParamsError(f"--only {only}: {outside} not among the notebooks {source} runs "
                          f"({[nb.number for nb in mine]}); --only narrows the params file's notebooks")
    return mine, chosen


def read_notebook(path: Path):
    """A notebook's ``.py`` source as jupytext reads it.

    jupytext is imported here, not with this module: through nbformat it loads jsonschema's format checkers,
    about 1.5 s, which a notebook kernel the runner started never needs (``run_folder.open_notebook``).
    """
    import jupytext

    return jupytext.read(path)


def parameter_declarations(path: Path) -> dict[str, tuple[str | None, Any]]:
    """``name -> (annotation, literal default)`` of a notebook's ``parameters`` cell, in order of declaration."""
    cells = [c for c in read_notebook(path).cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ParamsError(f"{path.name}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    declared: dict[str, tuple[str | None, Any]] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, annotation, value = node.target.id, ast.unparse(node.annotation), node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, annotation, value = node.targets[0].id, None, node.value
        else:
            raise ParamsError(f"{path.name}: the parameters cell may hold only `name: type = literal` lines, "
                              f"line {node.lineno} is not one")
        try:
            declared[name] = (annotation, ast.literal_eval(value))
        except ValueError as exc:
            raise ParamsError(f"{path.name}: parameter '{name}' (line {node.lineno}) is not a literal") from exc
    return declared


def declared_parameters(path: Path) -> dict[str, Any]:
    """The literal defaults of a notebook's ``parameters`` cell, in order of declaration."""
    return {name: default for name, (_, default) in parameter_declarations(path).items()}


def read_yaml_mapping(path: Path, what: str, shape: str, error: type[ParamsError] = ParamsError) -> dict[str, Any]:
    """A YAML file holding one mapping (an empty file is an empty mapping).

    Errors are ``error`` and name the file (and the line and column of a syntax error); ``what`` names the kind
    of file ("params file") and ``shape`` what it holds ("a flat mapping of keys to values").
    """
    return yaml_strict.read_mapping(path, what, shape, error)


def read_params(path: Path) -> dict[str, Any]:
    """Read a flat YAML params file (an empty file is an empty run)."""
    path = Path(path)
    data = read_yaml_mapping(path, "params file", "a flat mapping of keys to values, `key: value` per line")
    for key, value in data.items():
        if isinstance(value, str) and _looks_like_float(value):
            raise ParamsError(f"{path}: key '{key}' reads as the string {value!r}; YAML 1.1 needs a dot "
                              f"in floats, write e.g. 1.0e-4")
    return data


def _looks_like_float(text: str) -> bool:
    return re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", text.strip()) is not None


def check_params(params: dict[str, Any], notebooks: list[Notebook], source: str = "params") -> dict[str, list[str]]:
    """Check every key is declared by some notebook; return key -> notebooks declaring it.

    Raises:
        ParamsError: naming each unknown or reserved key and the keys that are valid.
    """
    owners: dict[str, list[str]] = {}
    annotations: dict[str, list[tuple[str, str | None]]] = {}
    for nb in notebooks:
        for key, (annotation, _) in parameter_declarations(nb.path).items():
            owners.setdefault(key, []).append(nb.name)
            annotations.setdefault(key, []).append((nb.name, annotation))
    check_task_names(params, source)
    reserved = [k for k in params if k in RESERVED_KEYS]
    if reserved:
        raise ParamsError(f"{source}: {reserved} are set by the runner and may not appear in a params file")
    unknown = [k for k in params if k not in owners and k not in RUN_KEYS]
    if unknown:
        valid = sorted(k for k in [*owners, *RUN_KEYS] if k not in RESERVED_KEYS)
        raise ParamsError(f"{source}: unknown key(s) {unknown}: no notebook in this run declares them "
                          f"({', '.join(nb.name for nb in notebooks)}). Valid keys: {valid}")
    for key, value in params.items():
        for notebook, annotation in annotations.get(key, []):
            check_type(key, value, annotation, notebook, source)
    return owners


TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,)}


def check_type(key: str, value: Any, annotation: str | None, notebook: str, source: str = "params") -> None:
    """A value fits the annotation a notebook declares its key with (an int is accepted for a float).

    Raises:
        ParamsError: naming the key, the value, the expected type and the notebook.
    """
    expected = TYPES.get(annotation or "")
    if expected is None:
        return
    fits = isinstance(value, expected) and not (isinstance(value, bool) and annotation != "bool")
    if fits:
        return
    hint = ""
    if isinstance(value, str) and annotation in ("float", "int") and _looks_like_float(value):
        hint = "; YAML 1.1 reads a float without a dot as a string: write it with one, e.g. 1.0e-4"
    elif isinstance(value, str) and annotation in ("list", "dict"):
        hint = f"; write a YAML {annotation}, e.g. {'[0.7, 0.15, 0.15]' if annotation == 'list' else '{a: 1}'}"
    kind = type(value).__name__
    article = "an" if kind[0] in "aeiou" else "a"
    raise ParamsError(f"{source}: {key} = {value!r} is {article} {kind}, but notebook {notebook} declares "
                      f"`{key}: {annotation}`{hint}")


def notebook_parameters(params: dict[str, Any], notebook: Notebook, run_dir: Path) -> dict[str, Any]:
    """The parameters to inject into one notebook: the keys it declares, plus ``run_dir``."""
    declared = declared_parameters(notebook.path)
    injected = {k: v for k, v in params.items() if k in declared}
    if "run_dir" in declared:
        injected["run_dir"] = str(run_dir)
    return injected


def check_task_names(params: dict[str, Any], source: str = "params") -> None:
    """Task names are unique across the studies of a run (every ``tasks``/``<study>_tasks`` list).

    Raises:
        ParamsError: naming the duplicated task and the keys that list it.
    """
    seen: dict[str, str] = {}
    for key, value in params.items():
        if not (key == "tasks" or key.endswith("_tasks")) or not isinstance(value, list):
            continue
        for entry in value:
            name = entry.get("name") if isinstance(entry, dict) else None
            if name is None:
                continue
            if name in seen:
                raise ParamsError(f"{source}: task name {name!r} appears in {seen[name]} and in {key}; task "
                                  "names are unique across the studies of a run (they name data/ and models/ "
                                  "folders)")
            seen[name] = key


def complete_params(notebook: Notebook, params: dict[str, Any]) -> dict[str, Any]:
    """A notebook's parameters as papermill would give them: its declared defaults, overlaid by ``params``.

    This is how the command line reads a study's settings: the same file gives the same values as the
    notebook that declares them.
    """
    declared = declared_parameters(notebook.path)
    return {key: params.get(key, default) for key, default in declared.items() if key not in RESERVED_KEYS}


def effective_expectations(params: dict[str, Any], notebooks: list[Notebook]) -> dict[str, Any]:
    """The expectations a run checks: each notebook's ``expect`` as it runs (its cell's default, or the params
    file's ``expect`` where the file sets one), merged over the notebooks."""
    merged: dict[str, Any] = {}
    for nb in notebooks:
        declared = declared_parameters(nb.path)
        if "expect" in declared:
            merged.update(params.get("expect", declared["expect"]) or {})
    return merged


def find_notebook(number: str, notebooks_dir: Path = NOTEBOOKS_DIR) -> Notebook:
    """The notebook numbered ``number`` (``"04"``)."""
    return select_notebooks(discover_notebooks(notebooks_dir), number)[0]


NEEDS_LINE = re.compile(r"^\*?Needs:(.*)$", re.MULTILINE)  # "*Needs: 01_generate_data, 04_train_lora.*"
NEEDED = re.compile(r"\b\d\d[a-z]?(?:_[a-z0-9_]+)?\b")  # a notebook's name, or its number alone


def notebook_needs(notebook: Notebook, notebooks: list[Notebook]) -> list[str]:
    """The notebooks whose outputs ``notebook`` reads, as its first markdown cell declares them.

    The declaration is a line of that cell, ``*Needs: 01_generate_data, 04_train_lora.*`` (names or numbers),
    or ``*Needs: no other notebook.*``; a notebook without the line needs nothing. The runner does not run a
    notebook whose needed notebook failed or was not run (``app.runner``).

    Args:
        notebooks: every numbered notebook, to resolve the declared names against.

    Returns:
        The needed notebooks' names, in run order.

    Raises:
        ParamsError: a declared notebook that does not exist or does not come before ``notebook``.
    """
    cells = [c for c in read_notebook(notebook.path).cells if c.cell_type == "markdown"]
    match = NEEDS_LINE.search(cells[0].source) if cells else None
    wanted = NEEDED.findall(match.group(1)) if match else []
    known = {**{nb.number: nb for nb in notebooks}, **{nb.name: nb for nb in notebooks}}
    unknown = [w for w in wanted if w not in known]
    later = [known[w].name for w in wanted if w in known and known[w].path.name >= notebook.path.name]
    if unknown or later:
        raise ParamsError(f"{notebook.path.name}: its 'Needs:' line names {unknown or later}, "
                          f"{'no such notebook' if unknown else 'not a notebook that runs before it'}; "
                          f"known: {[nb.name for nb in notebooks]}")
    needed = {known[w].name for w in wanted}
    return [nb.name for nb in notebooks if nb.name in needed]
