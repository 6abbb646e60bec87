"""What the ImageCLEFmedical Caption tasks ask: the allow-list of the secondary concept score, the prompts of
concept detection and caption generation (English and Spanish), and the answer line of a concepts sample.

Prompts follow the seed's cross-lingual prompting: the prompt's language is a setting, the caption's
language follows the gold captions (English for ImageCLEF), and the caption prompt names it, so a Spanish
prompt can ask for an English caption. Adapters (``data.adapters.roco``) and the caption and concept jobs
take their prompts from here.
"""

from __future__ import annotations

from collections.abc import Iterable

# The manually validated concepts of the secondary score, ImageCLEFmedical Caption 2025 and 2026.
MANUAL_CUIS: dict[str, str] = {
    "C0040405": "X-Ray Computed Tomography", "C0024485": "Magnetic Resonance Imaging",
    "C0041618": "Ultrasonography", "C1306645": "Plain x-ray", "C0002978": "angiogram",
    "C0032743": "Positron-Emission Tomography", "C0920367": "optical coherence tomography",
    "C0817096": "Chest", "C0000726": "Abdomen", "C0030797": "Pelvis", "C0037949": "Vertebral column",
    "C0037303": "Bone structure of cranium", "C0023216": "Lower Extremity", "C1140618": "Upper Extremity",
    "C0006141": "Breast",
}
LANGUAGES = ("en", "es")
# A language's name as each prompt language writes it: LANGUAGE_NAMES[prompt language][caption language].
LANGUAGE_NAMES = {"en": {"en": "English", "es": "Spanish"}, "es": {"en": "inglés", "es": "español"}}
CONCEPT_PROMPTS = {
    "en": "Which medical concepts does this image show? Answer with one line 'Concepts:' followed by the "
          "concepts, separated by semicolons.",
    "es": "¿Qué conceptos médicos muestra esta imagen? Responde con una línea 'Concepts:' seguida de los "
          "conceptos, separados por punto y coma.",
}
CAPTION_PROMPTS = {
    "en": "Write a caption for this medical image in {language}: the imaging modality, the body region and "
          "the main findings, in one sentence.",
    "es": "Escribe un pie de figura para esta imagen médica en {language}: la modalidad de imagen, la región "
          "del cuerpo y los hallazgos principales, en una frase.",
}
CONCEPTS_MARKER = "Concepts:"


def _check_language(value: str, what: str) -> str:
    if value not in LANGUAGES:
        raise ValueError(f"{what}={value!r}; use one of {list(LANGUAGES)}")
    return value


def concepts_prompt(prompt_language: str = "en") -> str:
    """The concept-detection question in ``prompt_language`` (``en`` or ``es``)."""
    return CONCEPT_PROMPTS[_check_language(prompt_language, "prompt_language")]


def caption_prompt(prompt_language: str = "en", caption_language: str = "en") -> str:
    """The caption instruction in ``prompt_language``, asking for a caption in ``caption_language``.

    ``caption_prompt("es", "en")`` asks in Spanish for an English caption (the gold's language).
    """
    template = CAPTION_PROMPTS[_check_language(prompt_language, "prompt_language")]
    language = LANGUAGE_NAMES[prompt_language][_check_language(caption_language, "caption_language")]
    return template.format(language=language)


def concepts_answer(concepts: Iterable[str]) -> str:
    """The answer line of a concepts sample: ``Concepts: C0040405; C0817096`` (``Concepts:`` for none).

    ``eval.answers.parse_concepts`` reads it back as the set of concepts (CUIs, or names mapped to CUIs).
    """
    items = [str(c).strip() for c in concepts]
    return f"{CONCEPTS_MARKER} {'; '.join(items)}" if items else CONCEPTS_MARKER
