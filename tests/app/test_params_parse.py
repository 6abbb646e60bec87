"""Parameter cells: papermill reads every line, and the run contract for several studies holds."""

import pytest
from papermill.translators import PythonTranslator

from brainvlm.app.params import (
    RESERVED_KEYS,
    declared_parameters,
    discover_notebooks,
    parameter_declarations,
    read_params,
)
from brainvlm.core.paths import PARAMS_DIR
from brainvlm.studies import SHARED_PARAMS

NOTEBOOKS = discover_notebooks()
SHARED_KEYS = (*RESERVED_KEYS, *SHARED_PARAMS, "expect")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_papermill_reads_every_parameter(nb):
    import jupytext
    cell = next(c for c in jupytext.read(nb.path).cells if "parameters" in c.metadata.get("tags", []))
    names = [p.name for p in PythonTranslator.inspect(cell)]
    assert names == list(declared_parameters(nb.path))


def test_a_key_declared_by_several_notebooks_has_one_annotation_and_default():
    seen: dict[str, tuple[str, tuple]] = {}
    for nb in NOTEBOOKS:
        for key, declaration in parameter_declarations(nb.path).items():
            if key == "expect":  # one meaning (metric -> rule); each notebook's default is its own study's rules
                assert declaration[0] == "dict"
                assert len({k.split(".")[0] for k in declaration[1]}) <= 1, f"{nb.name}: expect mixes studies"
                continue
            first = seen.setdefault(key, (nb.name, declaration))
            assert declaration == first[1], (f"{key}: {nb.name} declares {declaration}, {first[0]} declares "
                                              f"{first[1]}; give it one meaning or the study's prefix")


STUDY_PREFIXES = ("brain", "report", "cl", "concepts")
BRAIN_DATA_NOTEBOOKS = ("01", "02")  # build and check the brain cohort; their keys describe it (cohort_table, tasks)


def test_study_settings_carry_their_prefix_and_metrics_keys_too():
    for nb in NOTEBOOKS:
        if nb.number in BRAIN_DATA_NOTEBOOKS:
            continue
        for key in declared_parameters(nb.path):
            assert key in SHARED_KEYS or key.startswith(tuple(f"{p}_" for p in STUDY_PREFIXES)), (
                f"{nb.name} declares {key!r}: a study's own setting carries its prefix (brain_, report_, ...)")
    for path in sorted(PARAMS_DIR.glob("*.yaml")):
        for key in (read_params(path).get("expect") or {}):
            assert key.split(".")[0] in STUDY_PREFIXES, f"{path.name}: expect key {key!r} has no study prefix"
