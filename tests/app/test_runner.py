"""The runner and the params contract, on small notebooks written into a temp folder."""

import io
import json
import re
from pathlib import Path

import pytest

from brainvlm.app.console import Console
from brainvlm.app.params import (
    ParamsError,
    check_params,
    declared_parameters,
    discover_notebooks,
    notebook_needs,
    read_params,
)
from brainvlm.app.report import ExpectationError, check_expectations
from brainvlm.app.runner import NotebookFailed, run

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


def test_run_injects_params_and_run_dir_and_writes_reports(tmp_path, capfd):
    nbs = write_notebooks(tmp_path / "nb", **{"01_good": GOOD})
    params = tmp_path / "p.yaml"
    params.write_text("n: 7\n")
    console = Console(stream=io.StringIO(), bar=True)
    results = run(params, run_name="r", reports_dir=tmp_path / "reports", notebooks_dir=nbs, console=console)
    run_dir = tmp_path / "reports" / "r"
    assert [r.status for r in results] == ["ok"]
    assert json.loads((run_dir / "metrics" / "01_good.json").read_text()) == {"n_squared": 49}
    for name in ("01_good.ipynb", "01_good.html", "01_good.report.html", "index.html", "provenance.json"):
        assert (run_dir / name).is_file(), name
    assert "<td>n_squared</td><td>49</td>" in (run_dir / "index.html").read_text()
    shown = console.stream.getvalue().replace("\r", "\n")  # the bar redraws its line after a carriage return
    assert shown.startswith(f"brainvlm run r: 1 notebook (01_good) -> {run_dir}/\n")
    assert re.search(r"^\[1/1\] 01_good +started  \d\d:\d\d:\d\d$", shown, re.MULTILINE)
    assert re.search(r"01_good: +100%\|.*\| (\d+)/\1 \[", shown)  # papermill's bar of the cells
    assert re.search(r"^\[1/1\] 01_good +ok +\d+\.\d s$", shown, re.MULTILINE)
    assert shown.endswith(f"report: {run_dir / 'index.html'}\n")
    assert "without encryption" not in capfd.readouterr().err  # the kernel's start-up warning is hidden
    assert "n = 2" not in (run_dir / "01_good.report.html").read_text()  # no code in the paper version
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["params"] == {"n": 7} and provenance["packages"]["papermill"] != "not installed"


def test_a_failure_stops_only_the_notebooks_that_need_it(tmp_path):
    needs_01 = GOOD.replace("# # Good\n", "# # Good\n# *Needs: 01_bad.*\n").replace("01_good", "02_good")
    nbs = write_notebooks(tmp_path / "nb", **{"01_bad": BAD, "02_good": needs_01,
                                              "03_good": GOOD.replace("01_good", "03_good")})
    params = tmp_path / "p.yaml"
    params.write_text("fail_at: 5\n")
    console = Console(stream=io.StringIO())
    with pytest.raises(NotebookFailed, match=r"01_bad: cell \d+ .*ValueError: planned failure 5.*; "
                                             r"02_good not run: needs 01$"):
        run(params, run_name="r", reports_dir=tmp_path / "reports", notebooks_dir=nbs, console=console)
    run_dir = tmp_path / "reports" / "r"
    shown = console.stream.getvalue()
    assert re.search(r"^\[1/3\] 01_bad +failed +\d+\.\d s\n +01_bad: cell \d+ .*planned failure 5$", shown,
                     re.MULTILINE)
    assert re.search(r"^\[2/3\] 02_good +not run: needs 01$", shown, re.MULTILINE)
    assert re.search(r"^\[3/3\] 03_good +ok +\d+\.\d s$", shown, re.MULTILINE)  # it stands alone: it runs
    assert re.search(r"^  02_good +not run: needs 01$", shown, re.MULTILINE)  # the summary
    assert (run_dir / "01_bad.ipynb").is_file() and (run_dir / "01_bad.html").is_file()
    assert not (run_dir / "02_good.ipynb").exists() and (run_dir / "03_good.ipynb").is_file()
    page = (run_dir / "index.html").read_text()
    assert "<tr class='not-run'><td>02_good" in page and "not run: needs 01" in page
    assert "1 of 3 notebooks finished · 01_bad failed · 02_good not run: needs 01" in page
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert [n["status"] for n in provenance["notebooks"]] == ["failed", "not run: needs 01", "ok"]
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["state"], status["notebook"]) == ("failed", "01_bad")
    assert status["results"] == {"01_bad": "failed", "02_good": "not run: needs 01", "03_good": "ok"}


def test_an_unmet_expectation_is_a_result_the_run_goes_on_and_ends_non_zero(tmp_path):
    measured = GOOD.replace("n: int = 2  # how many", "n: int = 2  # how many\nexpect: dict = {}")
    needs_01 = (GOOD.replace("# # Good\n", "# # Good\n# *Needs: 01_good.*\n").replace("01_good.json", "02_good.json")
                .replace('{"n_squared": n * n}', '{"n_cubed": n ** 3}'))
    nbs = write_notebooks(tmp_path / "nb", **{"01_good": measured, "02_good": needs_01})
    params = tmp_path / "p.yaml"
    params.write_text("expect: {n_squared: '>= 100'}\n")
    with pytest.raises(NotebookFailed, match=r"^expectations not met: 01_good: n_squared = 4 \(expected >= 100\)"):
        run(params, run_name="r", reports_dir=tmp_path / "reports", notebooks_dir=nbs)
    run_dir = tmp_path / "reports" / "r"
    assert (run_dir / "metrics" / "02_good.json").is_file()  # 01 ran (its result missed): 02 runs
    page = (run_dir / "index.html").read_text()
    assert "2 of 2 notebooks finished · 1 expectation not met" in page and "✗ not met" in page
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["state"], status["notebook"], status["results"]) == ("failed", None, {"01_good": "ok",
                                                                                         "02_good": "ok"})


def test_needs_lines_name_earlier_notebooks(tmp_path):
    def needs(line: str) -> list[str]:
        third = GOOD.replace("# # Good\n", f"# # C\n{line}\n")
        folder = write_notebooks(tmp_path / str(len(list(tmp_path.iterdir()))),
                                 **{"01_a": GOOD, "02_b": GOOD, "03_c": third})
        notebooks = discover_notebooks(folder)
        return notebook_needs(notebooks[2], notebooks)

    assert needs("# *Needs: 01_a (its data) and 02.*") == ["01_a", "02_b"]
    assert needs("# *Needs: no other notebook.*") == [] and needs("# no line") == []
    with pytest.raises(ParamsError, match=r"03_c.py: its 'Needs:' line names \['01_x'\], no such notebook"):
        needs("# *Needs: 01_x.*")
    with pytest.raises(ParamsError, match=r"names \['03_c'\], not a notebook that runs before it"):
        needs("# *Needs: 03.*")


def test_every_notebook_declares_what_it_needs():
    from brainvlm.core.paths import NOTEBOOKS_DIR

    notebooks = discover_notebooks(NOTEBOOKS_DIR)
    for nb in notebooks:
        assert "*Needs:" in nb.path.read_text().split("# %% tags=")[0], f"{nb.name}: no *Needs: ...* line"
    needs = {nb.number: [n[:2] for n in notebook_needs(nb, notebooks)] for nb in notebooks}
    assert needs == {"01": [], "02": ["01"], "03": ["01", "02"], "04": ["01", "02"], "05": [], "06": [],
                     "07": ["01", "04"], "08": []}


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


# ---------------------------------------------------------------- the run contract for several studies
def test_a_params_file_names_its_notebooks_and_only_narrows_them(tmp_path):
    nbs = write_notebooks(tmp_path / "nb", **{"01_good": GOOD, "02_good": GOOD.replace("01_good", "02_good"),
                                              "03_bad": BAD})
    params = tmp_path / "p.yaml"
    params.write_text('notebooks: ["01", "02"]\nn: 3\n')
    results = run(params, run_name="r", reports_dir=tmp_path / "reports", notebooks_dir=nbs)
    assert [r.name for r in results] == ["01_good", "02_good"]  # 03_bad is not the file's: never run
    results = run(params, run_name="s", reports_dir=tmp_path / "reports", notebooks_dir=nbs, only="02")
    assert [r.name for r in results] == ["02_good"]
    with pytest.raises(ParamsError, match=r"--only 03: \['03_bad'\] not among the notebooks .* runs \(\['01', '02'\]\)"):
        run(params, run_name="t", reports_dir=tmp_path / "reports", notebooks_dir=nbs, only="03")
    params.write_text('notebooks: ["01"]\nfail_at: 2\n')  # declared only by 03_bad, which this file does not run
    with pytest.raises(ParamsError, match=r"unknown key\(s\) \['fail_at'\]: no notebook in this run declares them"):
        run(params, run_name="u", reports_dir=tmp_path / "reports", notebooks_dir=nbs)
    params.write_text("notebooks: 01\n")
    with pytest.raises(ParamsError, match=r"notebooks must be a non-empty list of quoted numbers"):
        run(params, run_name="v", reports_dir=tmp_path / "reports", notebooks_dir=nbs)


def test_task_names_are_unique_across_the_studies_of_a_run():
    params = {"tasks": [{"name": "sex"}, {"name": "bmi"}], "report_tasks": [{"name": "sex"}]}
    with pytest.raises(ParamsError, match=r"task name 'sex' appears in tasks and in report_tasks"):
        check_params(params, [], source="p.yaml")


# ---------------------------------------------------------------- typed values (bad input)
TYPED = '''# %% tags=["parameters"]
run_dir: str = ""
lr: float = 2.0e-3
epochs: int = 2
fractions: list = [0.6, 0.2, 0.2]
flag: bool = False

# %%
x = 1
'''


@pytest.mark.parametrize("text, message", [
    ('epochs: "two"\n', "epochs = 'two' is a str, but notebook 01_typed declares `epochs: int`"),
    ("lr: 1e-4\n", "key 'lr' reads as the string '1e-4'; YAML 1.1 needs a dot in floats, write e.g. 1.0e-4"),
    ("fractions: 0.6\n", "fractions = 0.6 is a float, but notebook 01_typed declares `fractions: list`"),
    ("flag: 1\n", "flag = 1 is an int, but notebook 01_typed declares `flag: bool`"),
    ("epochs: true\n", "epochs = True is a bool, but notebook 01_typed declares `epochs: int`"),
])
def test_every_value_is_checked_against_the_declared_annotation(tmp_path, text, message):
    nbs = write_notebooks(tmp_path / "nb", **{"01_typed": TYPED})
    params = tmp_path / "p.yaml"
    params.write_text(text)
    with pytest.raises(ParamsError, match=re.escape(message)):
        run(params, run_name="r", reports_dir=tmp_path / "reports", notebooks_dir=nbs)


def test_overrides_get_the_same_checks_and_an_int_is_a_float(tmp_path):
    from brainvlm.app.commands.common import parse_overrides

    nbs = write_notebooks(tmp_path / "nb", **{"01_typed": TYPED})
    params = tmp_path / "p.yaml"
    params.write_text("lr: 1\n")  # an int where a float is declared is fine
    assert check_params(read_params(params), discover_notebooks(nbs), source="p.yaml")
    with pytest.raises(ParamsError, match=re.escape(
            "-p: lr = '1e-4' is a str, but notebook 01_typed declares `lr: float`; YAML 1.1 reads a float "
            "without a dot as a string: write it with one, e.g. 1.0e-4")):
        check_params(parse_overrides([("lr", "1e-4")]), discover_notebooks(nbs), source="-p")
    with pytest.raises(ParamsError, match=re.escape("-p fractions '[0.6, 0.2': not a YAML value")):
        parse_overrides([("fractions", "[0.6, 0.2")])


def test_a_params_file_that_is_not_yaml_names_file_line_and_column(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("seed: 0\ntasks: [a, b\nlr: 1.0\n")
    with pytest.raises(ParamsError, match=re.escape(f"{params}:3:3: not valid YAML (expected ',' or ']', but got ':')")):
        read_params(params)
