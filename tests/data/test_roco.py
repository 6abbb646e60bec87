"""The ROCOv2 / ImageCLEF adapter on a hand-made fixture: samples, manual concepts, prompts, the image-folder
mode without gold, and an error naming the file and line for each broken rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from brainvlm.data.adapters import AdapterError, roco
from brainvlm.data.clef_tasks import MANUAL_CUIS, caption_prompt
from brainvlm.data.schema import validate_sample
from brainvlm.eval.answers import parse_concepts

CONCEPTS = {
    "ROCOv2_2023_train_000001": {"C0040405", "C0817096", "C0032227"},
    "ROCOv2_2023_train_000002": {"C0024485", "C0037303"},
    "ROCOv2_2023_train_000003": {"C0041618", "C0000726"},
    "ROCOv2_2023_train_000004": {"C1306645", "C0817096", "C0018800"},
}


@pytest.fixture
def fixture_root(test_data) -> Path:
    return test_data / "roco_fixture"


@pytest.fixture
def copy(fixture_root, tmp_path) -> Path:
    """A copy of the fixture to break."""
    return Path(shutil.copytree(fixture_root, tmp_path / "roco"))


def _text(sample: dict, turn: int) -> str:
    return next(p["text"] for p in sample["conversations"][turn]["content"] if p["type"] == "text")


# ---------------------------------------------------------------------------------------- samples
def test_the_fixture_becomes_valid_concepts_and_caption_samples(fixture_root):
    samples = roco.roco_samples(fixture_root, "train")
    assert [s["task"] for s in samples] == ["concepts"] * 4 + ["caption"] * 4
    assert all(validate_sample(s, image_root=fixture_root) == [] for s in samples)
    concepts = samples[:4]
    assert [s["id"] for s in concepts] == [f"{i}_concepts" for i in CONCEPTS]
    assert {s["metadata"]["image_id"]: parse_concepts(_text(s, 1)) for s in concepts} == CONCEPTS
    assert _text(concepts[0], 1) == "Concepts: C0040405; C0817096; C0032227"      # the file's order
    assert concepts[0]["conversations"][0]["content"][0] == {
        "type": "image", "image_path": "train/ROCOv2_2023_train_000001.jpg", "modality": "other"}
    assert concepts[0]["metadata"] == {"split": "train", "image_id": "ROCOv2_2023_train_000001",
                                       "dataset": "ROCOv2", "manual_cuis": ["C0040405", "C0817096"]}
    assert concepts[2]["metadata"]["manual_cuis"] == []                      # a manual row 'ID,'
    assert "manual_cuis" not in concepts[3]["metadata"]                      # no manual row
    captions = samples[4:]
    assert [_text(s, 1) for s in captions] == [
        "Axial CT of the chest showing a right pleural effusion.",
        "MRI of the head, T2-weighted, with no abnormality.",
        'Ultrasound of the abdomen; the "target" sign.',
        "Chest radiograph showing cardiomegaly."]                            # the line break collapsed
    assert _text(captions[0], 0) == caption_prompt("en", "en")


def test_valid_is_the_val_split_and_an_image_may_have_no_concepts(fixture_root):
    samples = roco.roco_samples(fixture_root, "valid", tasks=["concepts"])
    assert [s["metadata"]["split"] for s in samples] == ["val", "val"]
    assert _text(samples[1], 1) == "Concepts:" and parse_concepts(_text(samples[1], 1)) == frozenset()
    assert all("manual_cuis" not in s["metadata"] for s in samples)         # no manual file for valid


def test_spanish_prompts_and_names_as_the_answer(fixture_root):
    options = roco.PromptOptions(prompt_language="es", concept_target="names")
    concepts, caption = roco.roco_samples(fixture_root, "train", options=options)[0::4][:2]
    assert _text(concepts, 0).startswith("¿Qué conceptos médicos muestra esta imagen?")
    assert _text(concepts, 1) == "Concepts: X-Ray Computed Tomography; Chest; Pleural Effusion"
    assert _text(caption, 0) == caption_prompt("es", "en") and "en inglés" in _text(caption, 0)
    with pytest.raises(AdapterError, match="concept_target='words'"):
        roco.PromptOptions(concept_target="words")
    with pytest.raises(ValueError, match="prompt_language='fr'"):
        roco.PromptOptions(prompt_language="fr")


def test_the_manual_concepts_feed_the_secondary_score(fixture_root, tmp_path):
    from brainvlm.core.jsonio import write_jsonl
    from brainvlm.eval.evaluate import evaluate_files

    samples = roco.roco_samples(fixture_root, "train", tasks=["concepts"])
    predictions = [{"id": s["id"], "prediction": "Concepts: C0040405; C0817096"} for s in samples]
    write_jsonl(samples, tmp_path / "train.jsonl")
    write_jsonl(predictions, tmp_path / "p.jsonl")
    got = evaluate_files(tmp_path / "train.jsonl", tmp_path / "p.jsonl", allowed_cuis=MANUAL_CUIS, n_boot=0)
    assert got["clef_primary_f1"] == pytest.approx((0.8 + 0 + 0 + 0.4) / 4)
    # manual gold: {CT, Chest}, {MRI, cranium}, none (left out), and image 4's allowed concepts {x-ray, Chest}
    assert got["clef_secondary_f1"] == pytest.approx((1 + 0 + 0.5) / 3)


# ------------------------------------------------------------------------------------ without gold
def test_an_image_folder_and_ids_file_give_samples_without_gold(fixture_root):
    samples = roco.image_folder_samples(fixture_root / "test", fixture_root / "test_ids.csv")
    ids = ["ImageCLEFmedical_Caption_2025_test_1", "ImageCLEFmedical_Caption_2025_test_2",
           "ImageCLEFmedical_Caption_2025_test_10"]
    assert [s["id"] for s in samples] == [f"{i}_concepts" for i in ids] + [f"{i}_caption" for i in ids]
    assert all(validate_sample(s, image_root=fixture_root / "test") == [] for s in samples)
    png = samples[1]["conversations"][0]["content"][0]["image_path"]
    assert png == "ImageCLEFmedical_Caption_2025_test_2.png"
    assert all(s["metadata"]["no_reference"] and s["metadata"]["split"] == "test" for s in samples)
    assert _text(samples[0], 1) == "Concepts:" and _text(samples[3], 1) == roco.NO_REFERENCE["caption"]


def test_a_missing_image_in_the_folder_is_an_error_or_is_kept_flagged(copy):
    (copy / "test" / "ImageCLEFmedical_Caption_2025_test_10.jpg").unlink()
    with pytest.raises(AdapterError, match=r"test_ids.csv: 1 ids have no image .*"
                                           r"\['ImageCLEFmedical_Caption_2025_test_10 \(line 4\)'\]"):
        roco.image_folder_samples(copy / "test", copy / "test_ids.csv")
    kept = roco.image_folder_samples(copy / "test", copy / "test_ids.csv", tasks=["caption"], missing="keep")
    assert kept[2]["metadata"]["image_missing"] is True
    expected = kept[2]["conversations"][0]["content"][0]["image_path"]
    assert expected == "ImageCLEFmedical_Caption_2025_test_10.jpg"
    assert "image_missing" not in kept[0]["metadata"]


def test_the_ids_file_needs_an_id_column_and_unique_ids(copy):
    (copy / "ids.csv").write_text("image\n1\n", encoding="utf-8")
    with pytest.raises(AdapterError, match=r"ids.csv:1: the header \['image'\] does not start with ID"):
        roco.read_ids_file(copy / "ids.csv")
    (copy / "ids.csv").write_text("ID\n1\n\n2\n1\n", encoding="utf-8")
    with pytest.raises(AdapterError, match=r"ids.csv:5: the id '1' repeats line 2"):
        roco.read_ids_file(copy / "ids.csv")


# ---------------------------------------------------------------------------------------- errors
def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


BROKEN = [  # (file, old, new, tasks, message)
    ("train_concepts.csv", "C0024485;C0037303", "C0024485;C37303", ["concepts"],
     r"train_concepts.csv:3: malformed CUI \['C37303'\]"),
    ("train_concepts.csv", "C0041618;C0000726", "C0041618;C0000726;", ["concepts"],
     r"train_concepts.csv:4: malformed CUI \[''\]"),
    ("train_concepts.csv", "C0041618;C0000726", "C0041618;C0041618", ["concepts"],
     r"train_concepts.csv:4: CUI \['C0041618'\] listed twice"),
    ("train_concepts.csv", "ROCOv2_2023_train_000002,", "ROCOv2_2023_train_000001,", ["concepts"],
     r"train_concepts.csv:3: the id 'ROCOv2_2023_train_000001' repeats line 2"),
    ("train_concepts.csv", "ID,CUIs", "ID,CUI", ["concepts"],
     r"train_concepts.csv:1: no column \['CUIs'\] in the header \['ID', 'CUI'\]"),
    ("train_concepts.csv", "C0024485;C0037303", "C0024485;C0037303,extra", ["concepts"],
     r"train_concepts.csv:3: 3 fields for the 2 columns"),
    ("train_concepts.csv", "C0024485;C0037303", "C0024485;C0000001", ["concepts"],
     r"train_concepts.csv:3: CUI \['C0000001'\] is not in .*cui_mapping.csv"),
    ("train_concepts_manual.csv", "ROCOv2_2023_train_000003,", "ROCOv2_2023_train_000009,", ["concepts"],
     r"train_concepts_manual.csv:4: the id 'ROCOv2_2023_train_000009' is not in train_concepts.csv"),
    ("train_captions.csv", "ID,Caption", "ID,Text", ["caption"],
     r"train_captions.csv:1: no column \['Caption'\]"),
    ("train_captions.csv", "Axial CT of the chest showing a right pleural effusion.", '" "', ["caption"],
     r"train_captions.csv:2: the caption of 'ROCOv2_2023_train_000001' is empty"),
    ("cui_mapping.csv", "C0817096,Chest", "C081709,Chest", ["concepts"],
     r"cui_mapping.csv:9: CUI field .C081709. is not C followed by 7 digits"),
]


@pytest.mark.parametrize(("name", "old", "new", "tasks", "message"), BROKEN)
def test_each_broken_rule_is_an_error_naming_the_file_and_line(copy, name, old, new, tasks, message):
    _replace(copy / name, old, new)
    with pytest.raises(AdapterError, match=message):
        roco.roco_samples(copy, "train", tasks=tasks)


def test_a_missing_image_names_the_file_and_line(copy):
    (copy / "train" / "ROCOv2_2023_train_000003.jpg").unlink()
    image = "ROCOv2_2023_train_000003"
    message = rf"train_concepts.csv:4: image '{image}' has no file train/{image}.jpg"
    with pytest.raises(AdapterError, match=message):
        roco.roco_samples(copy, "train", tasks=["concepts"])
    with pytest.raises(AdapterError, match=r"train_captions.csv:4: image 'ROCOv2_2023_train_000003'"):
        roco.roco_samples(copy, "train", tasks=["caption"])


def test_a_missing_file_or_split_is_named(copy):
    with pytest.raises(AdapterError, match="test_concepts.csv: no such file"):
        roco.roco_samples(copy, "test")
    with pytest.raises(AdapterError, match="split 'holdout': unknown file prefix"):
        roco.canonical_split("holdout")
    with pytest.raises(AdapterError, match=r"tasks \['captions'\]"):
        roco.roco_samples(copy, "train", tasks=["captions"])
