"""Every parameter line parses for papermill too (it silently skips lines it cannot read)."""

import pytest
from papermill.translators import PythonTranslator

from brainvlm.params import declared_parameters, discover_notebooks

NOTEBOOKS = discover_notebooks()


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_papermill_reads_every_parameter(nb):
    import jupytext
    cell = next(c for c in jupytext.read(nb.path).cells if "parameters" in c.metadata.get("tags", []))
    names = [p.name for p in PythonTranslator.inspect(cell)]
    assert names == list(declared_parameters(nb.path))
