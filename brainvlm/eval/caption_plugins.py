"""Model-based caption metrics as optional plug-ins: they run only with weights the user has locally.

ImageCLEFmedical Caption also ranks captions by BERTScore, BLEURT, AlignScore, MedCAT and CLIPScore. Each
needs a model's weights, which their packages fetch from a hub on first use; brainvlm never downloads at
run time. So none of them is a dependency and no test needs them: a plug-in runs when the user names it,
gives a local folder of its weights, and has its package installed; hub access is switched off while it
runs (``HF_HUB_OFFLINE``), so a missing file is an error rather than a download.

Built in: ``bertscore`` (the ``bert-score`` package; F1 per caption). Others register a function
``(predictions, references, weights, **options) -> list[float]`` with :func:`register`, and run through the
same checks.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

Plugin = Callable[..., list[float]]
PACKAGES: dict[str, tuple[str, str]] = {"bertscore": ("bert_score", "bert-score")}  # name -> (module, pip name)
_REGISTERED: dict[str, Plugin] = {}


class PluginError(RuntimeError):
    """A plug-in that cannot run here; the message says what to provide."""


def register(name: str, function: Plugin, module: str | None = None, pip_name: str | None = None) -> None:
    """Add a plug-in: ``function(predictions, references, weights, **options)`` gives one score per caption."""
    _REGISTERED[name] = function
    if module:
        PACKAGES[name] = (module, pip_name or module)


def _bertscore(predictions: Sequence[str], references: Sequence[str], weights: Path, num_layers: int = 9,
               batch_size: int = 32) -> list[float]:
    from bert_score import BERTScorer

    scorer = BERTScorer(model_type=str(weights), num_layers=num_layers, batch_size=batch_size)
    return [float(f) for f in scorer.score(list(predictions), list(references))[2]]


register("bertscore", _bertscore)


@contextmanager
def _offline():
    saved = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({key: "1" for key in saved})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_plugin(name: str, predictions: Sequence[str], references: Sequence[str], weights: str | Path,
               **options) -> list[float]:
    """One score per caption from plug-in ``name`` with the model in the local folder ``weights``.

    Raises:
        PluginError: an unknown plug-in, a ``weights`` path that is not a local folder, or its package
            missing, each saying what to do.
    """
    if name not in _REGISTERED:
        raise PluginError(f"caption metric plug-in {name!r} unknown; registered: {sorted(_REGISTERED)} "
                          "(add one with brainvlm.eval.caption_plugins.register)")
    if len(predictions) != len(references):
        raise PluginError(f"{name}: {len(predictions)} captions for {len(references)} gold captions")
    folder = Path(weights)
    if not folder.is_dir():
        raise PluginError(f"{name}: weights {str(weights)!r} is not a local folder; download the model's weights "
                          "beforehand and give their folder (brainvlm does not fetch from a hub at run time)")
    module, pip_name = PACKAGES.get(name, (None, None))
    if module is not None:
        try:
            importlib.import_module(module)
        except ImportError:
            raise PluginError(f"{name}: the package {pip_name!r} is not installed; `pip install {pip_name}` to "
                              "use this optional metric") from None
    with _offline():
        return _REGISTERED[name](predictions, references, folder, **options)
