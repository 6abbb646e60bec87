"""Notebook pairs stay in sync, and the ci run produces the run contract's layout and byte-stable data."""

import json
import re

import jupytext
import pytest

from brainvlm.app.lab_setup import KERNEL_NAME
from brainvlm.app.params import declared_parameters, discover_notebooks, read_params, run_notebooks
from brainvlm.app.runner import run
from brainvlm.core.paths import PARAMS_DIR, PROJECT_ROOT

NOTEBOOKS = discover_notebooks()


def pair_content(notebook) -> dict:
    """What a pair must agree on: each cell's type, source and tags, and the kernelspec name.

    Nothing else (the jupytext version in the header, cell ids, outputs) makes a pair differ.
    """
    cells = [(c.cell_type, c.source, tuple(c.metadata.get("tags", []))) for c in notebook.cells]
    return {"cells": cells, "kernel": notebook.metadata.get("kernelspec", {}).get("name")}


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_ipynb_pair_is_in_sync_with_py_source(nb):
    paired = nb.path.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired.name} missing: run `make notebooks`"
    ipynb, py = pair_content(jupytext.read(paired)), pair_content(jupytext.read(nb.path))
    assert ipynb["kernel"] == py["kernel"] == KERNEL_NAME, f"{nb.name}: kernelspec {ipynb['kernel']!r}"
    for index, (a, b) in enumerate(zip(ipynb["cells"], py["cells"], strict=False)):
        assert a == b, f"{paired.name} cell {index} differs from {nb.path.name}: run `make notebooks`"
    assert len(ipynb["cells"]) == len(py["cells"]), f"{paired.name}: other cell count: run `make notebooks`"


def test_pair_check_ignores_the_jupytext_version_only():
    nb = NOTEBOOKS[0]
    text = nb.path.read_text()
    newer = text.replace("#   kernelspec:", "#     jupytext_version: 9.99.9\n#   kernelspec:", 1)
    assert pair_content(jupytext.reads(newer, fmt="py:percent")) == pair_content(jupytext.read(nb.path))
    edited = text.replace("# %% [markdown]", "# %% [markdown]\n# an edit", 1)
    assert pair_content(jupytext.reads(edited, fmt="py:percent")) != pair_content(jupytext.read(nb.path))


def test_committed_notebooks_carry_no_outputs_or_volatile_metadata():
    for nb in NOTEBOOKS:
        stored = json.loads(nb.path.with_suffix(".ipynb").read_text())
        assert all(not c.get("outputs") and c.get("execution_count") is None
                   for c in stored["cells"] if c["cell_type"] == "code"), nb.name
        assert '"jupytext_version":' not in json.dumps(stored["metadata"]), nb.name
        assert not re.search(r"^#\s+jupytext_version:", nb.path.read_text(), re.MULTILINE), nb.name


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_notebook_opens_with_title_and_declares_literal_parameters(nb):
    cells = jupytext.read(nb.path).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(f"# {nb.number} · ")
    assert "run_dir" in declared_parameters(nb.path)


@pytest.mark.parametrize("params", sorted(PARAMS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_params_key_is_declared_by_a_notebook(params):
    from brainvlm.app.params import check_params
    check_params(read_params(params), NOTEBOOKS, source=params.name)


def test_ci_run_writes_the_run_layout(ci_run):
    for name in ("index.html", "provenance.json", "data/manifest.json"):
        assert (ci_run / name).is_file(), name
    ran = run_notebooks(read_params(PARAMS_DIR / "ci.yaml"), NOTEBOOKS, None)[1]
    assert [nb.number for nb in ran] == [nb.number for nb in NOTEBOOKS]  # every notebook, every cell
    for nb in ran:
        for suffix in (".ipynb", ".html", ".report.html"):
            assert (ci_run / f"{nb.name}{suffix}").is_file()
        assert (ci_run / "metrics" / f"{nb.name}.json").is_file()
    for task in ("sex", "bmi"):
        for split in ("train", "val", "test"):
            assert (ci_run / "data" / task / f"{split}.jsonl").stat().st_size > 0
        assert list((ci_run / "data" / task / "samples").glob("*.json"))
    provenance = json.loads((ci_run / "provenance.json").read_text())
    assert "data/sex/train.jsonl" in provenance["hashes"]
    assert isinstance(provenance["threads"], int) and provenance["threads"] >= 1  # results depend on it
    assert list((ci_run / "figures").glob("*.svg"))
    marked = json.loads((ci_run / "figures" / "main.json").read_text())  # save_figure(..., main=True)
    assert sorted(marked) == [nb.number for nb in ran if "save_figure(" in nb.path.read_text()]
    index = (ci_run / "index.html").read_text()
    assert all(f'src="figures/{name}.png"' in index for name in marked.values()), marked


def test_same_params_and_seed_give_byte_identical_data(ci_run, tmp_path):
    run(PARAMS_DIR / "ci.yaml", run_name="again", reports_dir=tmp_path, only="01")
    again = tmp_path / "again" / "data"
    files = sorted(p.relative_to(ci_run / "data") for task in ("sex", "bmi")
                   for p in (ci_run / "data" / task).rglob("*.jsonl"))  # notebook 01's (05's: tests/studies)
    assert len(files) == 6
    for rel in files:
        assert (again / rel).read_bytes() == (ci_run / "data" / rel).read_bytes(), rel


def test_other_seed_gives_other_data(ci_run, tmp_path):
    run(PARAMS_DIR / "ci.yaml", run_name="seed1", reports_dir=tmp_path, only="01", overrides={"seed": 1})
    rel = "sex/train.jsonl"
    assert (tmp_path / "seed1" / "data" / rel).read_bytes() != (ci_run / "data" / rel).read_bytes()


def test_notebook_outputs_name_no_machine_path_and_no_silenced_deprecation(ci_run):
    import sys

    machine = [p for p in {sys.prefix, str(PROJECT_ROOT / ".venv")} if p]
    for nb in NOTEBOOKS:
        stored = json.loads((ci_run / f"{nb.name}.ipynb").read_text())
        for index, cell in enumerate(stored["cells"]):
            for output in cell.get("outputs", []):
                if output.get("name") != "stderr":
                    continue
                text = "".join(output["text"])
                assert not any(path in text for path in machine), f"{nb.name} cell {index}: {text[:300]}"
                assert "is_gradient_checkpointing" not in text and "Setting accelerator to CPU" not in text, (
                    f"{nb.name} cell {index}: {text[:300]}")


def test_warnings_name_the_package_file_not_the_machine_path():
    import warnings

    import peft.tuners.tuners_utils as module

    from brainvlm.app import warning_paths

    shown = warning_paths.format_warning("demo", UserWarning, module.__file__, 12)
    assert shown == "peft/tuners/tuners_utils.py:12: UserWarning: demo\n"
    warning_paths.install()
    assert warnings.formatwarning is warning_paths.format_warning
