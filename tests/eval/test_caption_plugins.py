"""Model-based caption metrics run only with local weights and their package, never from a hub."""

import os
import sys

import pytest

from brainvlm.eval import caption_plugins


def test_a_registered_plugin_runs_offline_on_a_local_folder(tmp_path):
    seen = {}

    def overlap(predictions, references, weights, scale=1.0):
        seen.update(offline=os.environ.get("HF_HUB_OFFLINE"), weights=weights)
        return [scale * len(set(p.split()) & set(r.split())) for p, r in zip(predictions, references)]

    caption_plugins.register("overlap", overlap)
    got = caption_plugins.run_plugin("overlap", ["a b c"], ["b c d"], tmp_path, scale=0.5)
    assert got == [1.0] and seen == {"offline": "1", "weights": tmp_path}


def test_what_is_missing_is_named():
    with pytest.raises(caption_plugins.PluginError, match="'bleurt-large' unknown; registered: .*bertscore"):
        caption_plugins.run_plugin("bleurt-large", ["a"], ["a"], ".")
    with pytest.raises(caption_plugins.PluginError, match="is not a local folder; download the model's weights"):
        caption_plugins.run_plugin("bertscore", ["a"], ["a"], "microsoft/deberta-xlarge-mnli")
    with pytest.raises(caption_plugins.PluginError, match="2 captions for 1 gold captions"):
        caption_plugins.run_plugin("bertscore", ["a", "b"], ["a"], ".")


def test_a_missing_package_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bert_score", None)  # as if not installed
    with pytest.raises(caption_plugins.PluginError, match=r"`pip install bert-score`"):
        caption_plugins.run_plugin("bertscore", ["a"], ["a"], tmp_path)
