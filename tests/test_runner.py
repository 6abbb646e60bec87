"""The runner and the params contract, on small notebooks written into a temp folder."""

import json
from pathlib import Path

import pytest

from brainvlm.params import ParamsError, check_params, declared_parameters, discover_notebooks, read_params
from brainvlm.report import ExpectationError, check_expectations
from brainvlm.runner import NotebookFailed, run

GOOD = '''# %% [markdown]
# # Good
# %% tags=["parameters"]
run_dir: str = ""  # injected
n: int = 2  # how many
scale: float = 1.0e-4  # tiny

# %%
import json, pathlib
out = pathlib.Path(run_dir) / "metrics"
out.mkdir(parents=True, exist_ok=True)
(out / "01_good.json").write_text(json.dumps({"n_squared": n * n}))
'''

BAD = '''# %% tags=["parameters"]
run_dir: str = ""
fail_at: int = 1

# %%
x = 1

# %%
raise ValueError(f"planned failure {fail_at}")
'''


def write_notebooks(folder: Path, **sources: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in sources.items():
        (folder / f"{name}.py").write_text(text)
    return folder


def test_declared_parameters_reads_literals(tmp_path):
    nbs = write_notebooks(tmp_path / "nb", **{"01_good": GOOD})
    assert declared_parameters(nbs / "01_good.py") == {"run_dir": "", "n": 2, "scale": 1.0e-4}


def test_unknown_key_is_an_error_naming_it(tmp_path):
    nbs = discover_notebooks(write_notebooks(tmp_path / "nb", **{"01_good": GOOD}))
    with pytest.raises(ParamsError, match=r"unknown key\(s\) \['n_subject'\]"):
        check_params({"n_subject": 3}, nbs)
    with pytest.raises(ParamsError, match="set by the runner"):
        check_params({"run_dir": "x"}, nbs)


def test_float_written_without_dot_is_an_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("lr: 1e-4\n")
    with pytest.raises(ParamsError, match="1.0e-4"):
        read_params(path)


def test_run_injects_params_and_run_dir_and_writes_reports(tmp_path):
    nbs = write_notebooks(tmp_path / "nb", **{"01_good": GOOD})
    params = tmp_path / "p.yaml"
    params.write_text("n: 7\n")
    results = run(params, run_name="r", reports_dir=tmp_path / "reports", notebooks_dir=nbs)
    run_dir = tmp_path / "reports" / "r"
    assert [r.status for r in results] == ["ok"]
    assert json.loads((run_dir / "metrics" / "01_good.json").read_text()) == {"n_squared": 49}
    for name in ("01_good.ipynb", "01_good.html", "01_good.report.html", "index.html", "provenance.json"):
        assert (run_dir / name).is_file(), name
    assert "n_squared: 49" in (run_dir / "index.html").read_text()
    assert "n = 2" not in (run_dir / "01_good.report.html").read_text()  # no code in the paper version
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["params"] == {"n": 7} and provenance["packages"]["papermill"] != "not installed"


def test_failing_notebook_names_the_cell_keeps_output_and_stops(tmp_path):
    nbs = write_notebooks(tmp_path / "nb", **{"01_bad": BAD, "02_good": GOOD.replace("01_good", "02_good")})
    params = tmp_path / "p.yaml"
    params.write_text("fail_at: 5\n")
    with pytest.raises(NotebookFailed, match=r"01_bad: cell \d+ .*ValueError: planned failure 5"):
        run(params, run_name="r", reports_dir=tmp_path / "reports", notebooks_dir=nbs)
    run_dir = tmp_path / "reports" / "r"
    assert (run_dir / "01_bad.ipynb").is_file() and (run_dir / "01_bad.html").is_file()
    assert not (run_dir / "02_good.ipynb").exists()
    assert "failed" in (run_dir / "index.html").read_text()


def test_expectation_never_measured_is_an_error(tmp_path):
    nbs = write_notebooks(tmp_path / "nb", **{"01_good": GOOD.replace("n: int = 2", "n: int = 2\nexpect: dict = {}")})
    params = tmp_path / "p.yaml"
    params.write_text("expect: {accuracy: '>= 0.9'}\n")
    with pytest.raises(NotebookFailed, match="no notebook of the run measured: \\['accuracy'\\]"):
        run(params, run_name="r", reports_dir=tmp_path / "reports", notebooks_dir=nbs)


def test_check_expectations():
    rows = check_expectations({"acc": 0.95, "other": 1}, {"acc": ">= 0.90", "missing": "< 3"})
    assert rows == [{"metric": "acc", "expected": ">= 0.9", "measured": 0.95, "passed": True}]
    with pytest.raises(ExpectationError, match=r"acc = 0.5 \(expected >= 0.9\)"):
        check_expectations({"acc": 0.5}, {"acc": ">= 0.90"})
