"""Studies: one module per study, holding what its notebooks and its command line share.

- :mod:`~brainvlm.studies.brain`: brain-MRI comparison conversations (notebooks 01-04, 07).
- :mod:`~brainvlm.studies.controls`: controls that show a model reads the images (any study).

Each study exposes ``train(params, task, run_dir, ...)``, which notebooks call and
``python -m brainvlm train --study NAME`` dispatches to. A study's own params keys carry its prefix
(``brain_``, ``report_``, ``cl_``, ``concepts_``); only the keys in ``SHARED_PARAMS`` have one meaning in
every study and keep their plain name.
"""

SHARED_PARAMS = ("seed", "model", "dtype", "load_in_4bit")
