"""Pickled weight files (``pytorch_model*.bin``, ``adapter_model.bin``) read so that no code runs from them.

``torch.load(weights_only=True)`` accepts tensors and plain values only; a crafted file (a plain pickle or
a zip whose ``data.pkl`` builds other objects) makes it raise ``UnpicklingError`` with a message that names
no file. Every place brainvlm reads such a file, or hands a folder holding one to transformers or PEFT,
goes through :func:`load_weights_file`, so the refusal names the file and says what to do.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

PICKLED_WEIGHTS = ("pytorch_model*.bin", "adapter_model.bin")


class WeightsFileError(ValueError):
    """A weights file brainvlm refuses to load; the message names the file and what to do."""


def load_weights_file(path: str | Path) -> Any:
    """The tensors of a pickled weights file, loaded with ``torch.load(weights_only=True)`` on the CPU.

    Raises:
        WeightsFileError: a file holding other Python objects (loading them could run code), or one that is
            not a PyTorch file at all, naming the file.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsFileError(f"{path}: refused: the file holds Python objects other than tensors and plain "
                               "values, and loading them could run code (a crafted or foreign file); use "
                               "weights saved as .safetensors, or re-save them from a trusted copy") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        detail = f"{type(err).__name__}: {str(err).splitlines()[0]}" if str(err).strip() else type(err).__name__
        raise WeightsFileError(f"{path}: not a PyTorch weights file ({detail}); the file is damaged or "
                               "foreign") from None


def check_pickled_weights(folder: str | Path) -> None:
    """Load every pickled weights file of a local ``folder`` with :func:`load_weights_file` (a hub id, or a
    folder whose weights are all safetensors, is left alone)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for pattern in PICKLED_WEIGHTS:
        for path in sorted(folder.glob(pattern)):
            load_weights_file(path)
