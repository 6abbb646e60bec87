"""Notebook pairs stay in sync, and the ci run produces the run contract's layout and byte-stable data."""

import json

import jupytext
import pytest

from brainvlm.app.params import declared_parameters, discover_notebooks, read_params, run_notebooks
from brainvlm.app.runner import run
from brainvlm.core.paths import PARAMS_DIR

NOTEBOOKS = discover_notebooks()


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_ipynb_is_in_sync_with_py_source(nb):
    paired = nb.path.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired.name} missing: run `make notebooks`"
    as_text = jupytext.writes(jupytext.read(paired), fmt="py:percent")
    assert as_text == nb.path.read_text(), f"{paired.name} differs from {nb.path.name}: run `make notebooks`"


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
    assert [nb.number for nb in ran] == ["01", "02", "03", "04", "07"]
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
