"""Pickled weight files (``pytorch_model.bin``, ``adapter_model.bin``): a crafted one is refused naming the
file, and nothing in it runs."""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from brainvlm.model import loader, lora
from brainvlm.model.tiny import build_tiny_model
from brainvlm.model.weights_files import WeightsFileError, load_weights_file

REFUSED = ("{path}: refused: the file holds Python objects other than tensors and plain values, and loading them "
           "could run code (a crafted or foreign file); use weights saved as .safetensors, or re-save them from a "
           "trusted copy")


class _Payload:
    """A pickle that would create a file when unpickled (what a crafted weights file can do)."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ["BRAINVLM_PAYLOAD"]),))


def crafted(path: Path, kind: str) -> Path:
    """A weights file that builds ``_Payload``: a plain pickle, or torch's zip layout with a crafted data.pkl."""
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"weight": _Payload()}, protocol=2))
        return path
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source, zipfile.ZipFile(path, "w") as out:
        for item in source.infolist():
            data = source.read(item.filename)
            out.writestr(item, pickle.dumps({"weight": _Payload()}, protocol=2) if item.filename.endswith(
                "data.pkl") else data)
    return path


@pytest.fixture()
def marker(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "code_ran"
    monkeypatch.setenv("BRAINVLM_PAYLOAD", str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model folder and an adapter folder saved for it."""
    root = tmp_path_factory.mktemp("tiny")
    folder = build_tiny_model(root / "model")
    model, _ = loader.load(folder)
    lora.save_adapter(lora.add_lora(model, r=4, alpha=8), root / "adapter")
    return Path(folder), root / "adapter"


@pytest.mark.parametrize("kind", ["pickle", "zip"])
def test_a_crafted_file_is_refused_naming_it(tmp_path, marker, kind):
    path = crafted(tmp_path / "pytorch_model.bin", kind)
    with pytest.raises(WeightsFileError, match=re.escape(REFUSED.format(path=path))):
        load_weights_file(path)
    assert not marker.exists()
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(WeightsFileError, match=re.escape(f"{tmp_path / 'empty.bin'}: not a PyTorch weights file (")):
        load_weights_file(tmp_path / "empty.bin")


@pytest.mark.parametrize("kind", ["pickle", "zip"])
def test_a_crafted_model_or_adapter_file_is_refused_where_it_is_loaded(tiny, tmp_path, marker, kind):
    folder, adapter = tiny
    model_copy = Path(shutil.copytree(folder, tmp_path / "model"))
    for path in model_copy.glob("*.safetensors"):
        path.unlink()
    bad_model = crafted(model_copy / "pytorch_model.bin", kind)
    with pytest.raises(WeightsFileError, match=re.escape(REFUSED.format(path=bad_model))):
        loader.load(model_copy)
    adapter_copy = Path(shutil.copytree(adapter, tmp_path / "adapter"))
    for path in adapter_copy.glob("*.safetensors"):
        path.unlink()
    bad_adapter = crafted(adapter_copy / "adapter_model.bin", kind)
    base, _ = loader.load(folder)
    with pytest.raises(WeightsFileError, match=re.escape(REFUSED.format(path=bad_adapter))):
        lora.load_adapter(base, adapter_copy)
    assert not marker.exists()
