"""Model answers to ImageCLEFmedical Caption files: concept names and CUIs, captions, and what it took.

The answers of a concepts or captions job (``studies.clef_jobs``), image id -> the model's text (None for an
image that failed), become:

- concepts: Format B (``ID,CUIs``, through ``clef_files.write_concepts``), Format A (``ID,Names``: the names
  as the model wrote them, the seed's ``--output_csv_natural``) and a table of each distinct name with its
  count and mapping (CUI, method, score, candidates). A name is a CUI as written, or mapped through a
  :class:`~brainvlm.data.concept_map.ConceptMapper`; names without a CUI are left out of Format B and
  counted, with examples. An answer that cannot be read as a concept list, or a failed image, gets no
  concepts (``ID,``).
- captions: ``ID,Caption`` (``clef_files.write_captions``) after ``captions.tidy_caption``; a failed image,
  or a caption with nothing left after tidying, gets the fallback caption.

Each writer returns its part of the job's summary. Nothing here loads a model, so the files of any system's
answers are written on a laptop.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainvlm.data.concept_map import ConceptMapper, ConceptMatch
from brainvlm.eval.answers import concept_items
from brainvlm.eval.captions import FALLBACK_CAPTIONS, tidy_caption
from brainvlm.eval.clef_files import MAX_CONCEPTS, check_submission, write_captions, write_concepts

OUTPUTS = {"concepts": "concepts.csv", "names": "concepts_natural.csv", "mapping": "concept_names.csv",
           "captions": "captions.csv"}
MAX_EXAMPLES = 10
CUI = re.compile(r"C\d{7}", re.IGNORECASE)


def match_name(name: str, mapper: ConceptMapper | None) -> ConceptMatch:
    """A name as the CUI file sees it: a CUI as written (method ``cui``), else mapped, else unmapped."""
    if CUI.fullmatch(name):
        return ConceptMatch(name, name.upper(), 100.0, "cui")
    return mapper.map(name) if mapper is not None else ConceptMatch(name, None, 0.0, "unmapped")


@dataclass
class ConceptAnswers:
    """Per image the names the model wrote (Format A) and their CUIs (Format B); each distinct name's match
    and count; the images whose answer could not be read as a concept list."""

    names: dict[str, list[str]]
    cuis: dict[str, list[str]]
    matches: dict[str, ConceptMatch]
    counts: Counter
    unparseable: list[str]


def concept_answers(answers: dict[str, str | None], mapper: ConceptMapper | None) -> ConceptAnswers:
    """Each image's names and CUIs (first occurrence kept, at most 100; none for a failed or unread answer).

    Args:
        answers: image id -> the model's answer (``Concepts: ...``), None for an image that failed.
        mapper: maps names to CUIs; None: only the CUIs the model wrote count.
    """
    found = ConceptAnswers({}, {}, {}, Counter(), [])
    for image, text in answers.items():
        items = concept_items(text) if text is not None else []
        if items is None:
            found.unparseable.append(image)
            items = []
        for name in items:
            if name not in found.matches:
                found.matches[name] = match_name(name, mapper)
        found.counts.update(items)
        found.names[image] = items
        cuis = [found.matches[name].cui for name in items if found.matches[name].cui]
        found.cuis[image] = list(dict.fromkeys(cuis))[:MAX_CONCEPTS]
    return found


def _write_rows(path: Path, rows: list[list[Any]]) -> Path:
    """A CSV as the submission files are written: UTF-8 without BOM, ``\\n`` line ends, quoted as needed."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_bytes(buffer.getvalue().encode("utf-8"))
    return path


def write_names(path: str | Path, ids: list[str], names: dict[str, list[str]]) -> Path:
    """Format A, ``ID,Names``: the names as the model wrote them, ``;``-joined, one row per id in order."""
    return _write_rows(Path(path), [["ID", "Names"], *([image, ";".join(names[image])] for image in ids)])


def write_matches(path: str | Path, found: ConceptAnswers) -> Path:
    """Every distinct name the model wrote: how often, its CUI, the mapping method, score and candidates."""
    rows = [[name, found.counts[name], match.cui or "", match.method, match.score, ";".join(match.candidates)]
            for name, match in found.matches.items()]
    return _write_rows(Path(path), [["name", "count", "cui", "method", "score", "candidates"], *rows])


def concept_outputs(out_dir: str | Path, ids: list[str], answers: dict[str, str | None],
                    mapper: ConceptMapper | None) -> dict[str, Any]:
    """Write Format B, Format A and the name table into ``out_dir``; return the concepts part of a summary.

    Args:
        ids: the image ids in the order of the samples (or ids) file; every one is a key of ``answers``.
    """
    out_dir = Path(out_dir)
    found = concept_answers(answers, mapper)
    write_concepts(out_dir / OUTPUTS["concepts"], ids, found.cuis)
    write_names(out_dir / OUTPUTS["names"], ids, found.names)
    write_matches(out_dir / OUTPUTS["mapping"], found)
    methods: Counter = Counter()
    for name, count in found.counts.items():
        methods[found.matches[name].method] += count
    unmapped = [name for name in found.counts if found.matches[name].cui is None]
    return {"files": {key: OUTPUTS[key] for key in ("concepts", "names", "mapping")},
            "unparseable": {"count": len(found.unparseable), "examples": found.unparseable[:MAX_EXAMPLES]},
            "images_without_concepts": sum(1 for image in ids if not found.cuis[image]),
            "mapping_methods": dict(sorted(methods.items())),
            "unmapped_names": {"count": sum(found.counts[name] for name in unmapped),
                               "distinct": len(unmapped), "examples": unmapped[:MAX_EXAMPLES]}}


def caption_outputs(out_dir: str | Path, ids: list[str], answers: dict[str, str | None],
                    language: str = "en") -> dict[str, Any]:
    """Write ``ID,Caption`` into ``out_dir`` (tidied; the fallback caption for failed images); return the
    captions part of a summary, with the answers that had nothing left after tidying."""
    fallback = FALLBACK_CAPTIONS[language]
    captions = {image: tidy_caption(text, language) if text is not None else fallback
                for image, text in answers.items()}
    emptied = [image for image, text in answers.items()
               if text is not None and captions[image] == fallback and " ".join(text.split()) != fallback]
    write_captions(Path(out_dir) / OUTPUTS["captions"], ids, captions)
    return {"files": {"captions": OUTPUTS["captions"]}, "fallback_caption": fallback,
            "empty_after_tidying": {"count": len(emptied), "examples": emptied[:MAX_EXAMPLES]}}


def submission_check(path: str | Path, ids: list[str], kind: str) -> dict[str, Any]:
    """``clef_files.check_submission`` of a written file, as a summary reports it."""
    violations = check_submission(path, ids, kind)
    return {"file": Path(path).name, "valid": not violations, "violations": len(violations),
            "examples": [str(v) for v in violations[:MAX_EXAMPLES]]}
