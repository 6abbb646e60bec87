"""The ImageCLEF task prompts (English and Spanish; the caption in the gold's language) and answer line."""

import pytest

from brainvlm.data import clef_tasks
from brainvlm.eval.answers import parse_concepts


def test_the_spanish_caption_prompt_asks_for_an_english_caption():
    rendered = clef_tasks.caption_prompt("es", "en")
    assert rendered == ("Escribe un pie de figura para esta imagen médica en inglés: la modalidad de imagen, "
                        "la región del cuerpo y los hallazgos principales, en una frase.")
    assert "médica en español: la modalidad" in clef_tasks.caption_prompt("es", "es")
    assert clef_tasks.caption_prompt() == ("Write a caption for this medical image in English: the imaging "
                                           "modality, the body region and the main findings, in one "
                                           "sentence.")


def test_the_concept_prompts_name_the_answer_line():
    for language in clef_tasks.LANGUAGES:
        assert "'Concepts:'" in clef_tasks.concepts_prompt(language)
    assert clef_tasks.concepts_prompt("es").startswith("¿Qué conceptos médicos muestra esta imagen?")


def test_an_unknown_language_is_refused():
    with pytest.raises(ValueError, match=r"prompt_language='fr'; use one of \['en', 'es'\]"):
        clef_tasks.caption_prompt("fr")
    with pytest.raises(ValueError, match="caption_language='de'"):
        clef_tasks.caption_prompt("en", "de")


def test_the_answer_line_reads_back_as_the_concepts():
    assert clef_tasks.concepts_answer(["C0040405", "C0817096"]) == "Concepts: C0040405; C0817096"
    assert parse_concepts(clef_tasks.concepts_answer(["C0040405", "C0817096"])) == {"C0040405", "C0817096"}
    assert clef_tasks.concepts_answer([]) == "Concepts:"
    assert parse_concepts(clef_tasks.concepts_answer([])) == frozenset()


def test_the_allow_list_has_the_15_concepts_of_2025_and_2026():
    assert len(clef_tasks.MANUAL_CUIS) == 15
    assert clef_tasks.MANUAL_CUIS["C0037303"] == "Bone structure of cranium"
