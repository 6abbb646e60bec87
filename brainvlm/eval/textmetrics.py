"""Caption and report metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D, computed as pycocoevalcap computes them.

- Text is first sanitised (``sanitize_text``): line breaks, tabs, control characters and METEOR's field
  separator ``|||`` become single spaces, so no answer can break the METEOR or tokenizer protocols.
- ``tokenize="ptb"`` (default, the COCO caption standard) lower-cases and splits with the Stanford PTB
  tokenizer shipped with pycocoevalcap and drops its punctuation tokens; ``"none"`` feeds the
  sanitised text as it is (whitespace tokens, case kept), which is what nlg-eval does.
- BLEU uses pycocoevalcap's n-gram statistics with the "closest" reference length; CIDEr is CIDEr-D
  (sigma 6) with IDF from the scored corpus, so a subset (a domain, a bootstrap replicate) is scored
  with its own IDF; ROUGE-L is the mean of per-sample ROUGE-L (beta 1.2); METEOR 1.5 runs in one JVM
  per ``TextScorer`` (``-l en -norm``), and its corpus score comes from METEOR's own aggregate.
- Java (for METEOR and the PTB tokenizer) is looked up on PATH. Without it METEOR is reported as
  ``None`` with a ``METEOR_unavailable`` reason, and ``tokenize="ptb"`` is an error that says to use
  ``tokenize="none"``. SPICE is not computed.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from brainvlm.eval.bootstrap import bootstrap_indices, percentile_interval

METRIC_NAMES = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
TOKENIZE_MODES = ("ptb", "none")
_JAVA_FLAGS = ["-Dfile.encoding=UTF-8", "-Dsun.stdout.encoding=UTF-8"]
_BLEU_SMALL, _BLEU_TINY = 1e-9, 1e-15  # pycocoevalcap's guards against division by zero


def _coco_dir() -> Path:
    spec = find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pycocoevalcap is not installed; pip install pycocoevalcap")
    return Path(next(iter(spec.submodule_search_locations)))


def java_path() -> str | None:
    """The ``java`` executable on PATH, or ``None``."""
    return shutil.which("java")


def sanitize_text(text: str | None) -> str:
    """Text safe for METEOR's line protocol: ``|||``, line breaks, tabs and control characters become
    single spaces; runs of spaces collapse; ends are stripped."""
    text = (text or "").replace("|||", " ")
    chars = (" " if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") else ch
             for ch in text)
    return " ".join("".join(chars).split())


def ptb_tokenize(texts: Sequence[str], java: str) -> list[str]:
    """Lower-cased PTB tokens without punctuation, as pycocoevalcap's ``PTBTokenizer``, one JVM for all texts."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, STANFORD_CORENLP_3_4_1_JAR

    clean = [sanitize_text(t) for t in texts]
    todo = [i for i, t in enumerate(clean) if t]
    jar = _coco_dir() / "tokenizer" / STANFORD_CORENLP_3_4_1_JAR
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "sentences.txt"
        source.write_text("\n".join(clean[i] for i in todo) + "\n", encoding="utf-8")
        cmd = [java, *_JAVA_FLAGS, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", str(source)]
        done = subprocess.run(cmd, capture_output=True, check=False)
    lines = done.stdout.decode("utf-8").split("\n")[: len(todo)]
    if done.returncode != 0 or len(lines) != len(todo):
        raise RuntimeError(f"PTB tokenizer returned {len(lines)} lines for {len(todo)} texts (exit "
                           f"{done.returncode}): {done.stderr.decode('utf-8', 'replace')[-500:]}")
    out = [""] * len(texts)
    for i, line in zip(todo, lines):
        out[i] = " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)
    return out


class MeteorScorer:
    """METEOR 1.5 in one JVM (``java -jar meteor-1.5.jar - - -stdio -l en -norm``) for many calls.

    Use as a context manager; ``stats`` aligns one hypothesis with its references, ``evaluate`` turns
    a list of stats lines into segment scores and METEOR's corpus score (cheap: no re-alignment).
    """

    def __init__(self, java: str):
        self._stderr = tempfile.TemporaryFile()
        jar = _coco_dir() / "meteor" / "meteor-1.5.jar"
        self._process = subprocess.Popen(
            [java, *_JAVA_FLAGS, "-jar", "-Xmx2G", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"],
            cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)

    def _ask(self, line: str, n_answers: int) -> list[str]:
        self._process.stdin.write((line + "\n").encode("utf-8"))
        self._process.stdin.flush()
        answers = [self._process.stdout.readline().decode("utf-8").strip() for _ in range(n_answers)]
        if any(not a for a in answers):
            self._stderr.seek(0)
            raise RuntimeError("METEOR (Java) stopped answering: "
                               + self._stderr.read().decode("utf-8", "replace")[-500:])
        return answers

    def stats(self, hypothesis: str, references: Sequence[str]) -> str:
        """METEOR's sufficient statistics for one segment (inputs are sanitised here)."""
        refs = [sanitize_text(r) for r in references]
        return self._ask(" ||| ".join(["SCORE", *refs, sanitize_text(hypothesis)]), 1)[0]

    def evaluate(self, stats: Sequence[str]) -> tuple[float, list[float]]:
        """METEOR's corpus score and the segment scores for a list of ``stats`` lines."""
        if not stats:
            return math.nan, []
        answers = self._ask(" ||| ".join(["EVAL", *stats]), len(stats) + 1)
        return float(answers[-1]), [float(a) for a in answers[:-1]]

    def close(self) -> None:
        """Stop the JVM."""
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.kill()
            self._process.wait()
        self._stderr.close()

    def __enter__(self) -> MeteorScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class TextCorpus:
    """Per-sample statistics of a scored corpus; subsets are scored from these without re-tokenising."""

    hypotheses: list[str]
    references: list[list[str]]
    bleu_stats: np.ndarray  # (n, 10): test length, closest reference length, guesses 1..4, matches 1..4
    cider_test: list
    cider_refs: list
    rouge_l: np.ndarray
    meteor_stats: list[str] | None
    meteor_segments: np.ndarray | None
    meteor_unavailable: str | None = None

    def __len__(self) -> int:
        return len(self.hypotheses)


def _bleu_stats(hypothesis: str, references: list[str]) -> list[int]:
    from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test

    cooked = cook_test(hypothesis, cook_refs(references))
    closest = min((abs(length - cooked["testlen"]), length) for length in cooked["reflen"])[1]
    return [cooked["testlen"], closest, *cooked["guess"], *cooked["correct"]]


def bleu_from_stats(stats: np.ndarray) -> list[float]:
    """Corpus BLEU-1..4 from summed per-sample statistics, with pycocoevalcap's formula and guards."""
    total = [int(v) for v in np.asarray(stats).sum(axis=0)] if len(stats) else [0] * 10
    testlen, reflen, guess, correct = total[0], total[1], total[2:6], total[6:10]
    bleus, bleu = [], 1.0
    for k in range(4):
        bleu *= float(correct[k] + _BLEU_TINY) / (guess[k] + _BLEU_SMALL)
        bleus.append(bleu ** (1.0 / (k + 1)))
    ratio = (testlen + _BLEU_TINY) / (reflen + _BLEU_SMALL)
    if ratio < 1:
        bleus = [b * math.exp(1 - 1 / ratio) for b in bleus]
    return bleus


def cider_score(cider_test: list, cider_refs: list) -> float:
    """CIDEr-D of pre-cooked samples, with IDF from exactly these samples."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    if not cider_test:
        return math.nan
    if not any(ngrams for refs in cider_refs for ngrams in refs):
        return 0.0  # no reference n-gram at all: every similarity is 0
    scorer = CiderScorer(n=4, sigma=6.0)
    scorer.ctest, scorer.crefs = list(cider_test), list(cider_refs)
    return float(scorer.compute_score()[0])


class TextScorer:
    """Scores hypotheses against references; starts at most one METEOR JVM, used for every call.

    Example::

        with TextScorer(tokenize="ptb") as scorer:
            corpus = scorer.prepare(hypotheses, references)
            headline = scorer.scores(corpus)
            per_domain = scorer.scores(corpus, rows=np.flatnonzero(domains == "chest"))
            ci = scorer.bootstrap(corpus, units=subjects, n_boot=200)
    """

    def __init__(self, tokenize: str = "ptb", meteor: bool = True, progress: bool = False):
        if tokenize not in TOKENIZE_MODES:
            raise ValueError(f"tokenize={tokenize!r}; use one of {TOKENIZE_MODES}")
        self.tokenize, self.progress = tokenize, progress
        self.java = java_path()
        self._meteor: MeteorScorer | None = None
        self.meteor_unavailable: str | None = None if meteor else "METEOR not requested (meteor=False)"
        if self.java is None and self.meteor_unavailable is None:
            self.meteor_unavailable = "java not found on PATH: METEOR 1.5 needs a Java runtime (e.g. OpenJDK 17)"
        if self.java is None and tokenize == "ptb":
            raise RuntimeError("tokenize='ptb' runs the Stanford PTB tokenizer, which needs java on PATH; "
                               "install a Java runtime or pass tokenize='none'")

    def _meteor_scorer(self) -> MeteorScorer | None:
        if self._meteor is None and self.meteor_unavailable is None:
            try:
                self._meteor = MeteorScorer(self.java)
            except OSError as exc:
                self.meteor_unavailable = f"METEOR could not start java ({self.java}): {exc}"
        return self._meteor

    def _tokenize(self, texts: list[str]) -> list[str]:
        if self.tokenize == "ptb":
            return ptb_tokenize(texts, self.java)
        return [sanitize_text(t) for t in texts]

    def _meteor_stats(self, hyps: list[str], refs: list[list[str]]) -> tuple[list[str] | None, np.ndarray | None]:
        scorer = self._meteor_scorer()
        if scorer is None:
            return None, None
        try:
            stats = [scorer.stats(h, r) for h, r in tqdm(list(zip(hyps, refs)), desc="METEOR",
                                                         disable=not self.progress)]
            return stats, np.asarray(scorer.evaluate(stats)[1], dtype=float)
        except RuntimeError as exc:
            self.meteor_unavailable = str(exc)
            return None, None

    def prepare(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> TextCorpus:
        """Sanitise, tokenise and compute every per-sample statistic once.

        Args:
            hypotheses: one text per sample ("" for a missing prediction).
            references: one non-empty list of reference texts per sample.
        """
        from pycocoevalcap.cider.cider_scorer import cook_refs, cook_test
        from pycocoevalcap.rouge.rouge import Rouge

        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
        empty = [i for i, r in enumerate(references) if len(r) == 0]
        if empty:
            raise ValueError(f"samples at positions {empty[:10]} have no reference text; give each at least one")
        flat = self._tokenize([*hypotheses, *[r for refs in references for r in refs]])
        hyps, refs, pos = flat[: len(hypotheses)], [], len(hypotheses)
        for r in references:
            refs.append(flat[pos: pos + len(r)])
            pos += len(r)
        rouge = Rouge()
        meteor_stats, meteor_segments = self._meteor_stats(hyps, refs)
        return TextCorpus(
            hypotheses=hyps, references=refs,
            bleu_stats=np.array([_bleu_stats(h, r) for h, r in zip(hyps, refs)], dtype=np.int64).reshape(-1, 10),
            cider_test=[cook_test(h) for h in hyps], cider_refs=[cook_refs(r) for r in refs],
            rouge_l=np.array([rouge.calc_score([h], r) for h, r in zip(hyps, refs)], dtype=float),
            meteor_stats=meteor_stats, meteor_segments=meteor_segments, meteor_unavailable=self.meteor_unavailable)

    def scores(self, corpus: TextCorpus, rows: Sequence[int] | None = None) -> dict[str, float | str | None]:
        """Corpus metrics of ``rows`` (default: all): BLEU, CIDEr and METEOR recomputed on that subset."""
        rows = np.arange(len(corpus)) if rows is None else np.asarray(rows, dtype=int)
        if len(rows) == 0:
            return {name: math.nan for name in METRIC_NAMES}
        result: dict[str, float | str | None] = dict(zip(METRIC_NAMES[:4], bleu_from_stats(corpus.bleu_stats[rows])))
        result["ROUGE_L"] = float(corpus.rouge_l[rows].mean())
        result["CIDEr"] = cider_score([corpus.cider_test[i] for i in rows], [corpus.cider_refs[i] for i in rows])
        result["METEOR"] = None
        if corpus.meteor_stats is not None and self._meteor is not None:
            result["METEOR"] = self._meteor.evaluate([corpus.meteor_stats[i] for i in rows])[0]
        if result["METEOR"] is None:
            result["METEOR_unavailable"] = corpus.meteor_unavailable or "METEOR JVM closed before scoring"
        return result

    def bootstrap(self, corpus: TextCorpus, units: Sequence, n_boot: int = 200, seed: int = 0,
                  level: float = 0.95) -> dict[str, dict]:
        """Percentile intervals resampling ``units`` (one label per sample, e.g. subjects).

        BLEU and CIDEr are recomputed on each resampled corpus (CIDEr with that corpus's IDF); ROUGE-L
        averages the resampled segment scores, as its corpus score does. METEOR's corpus score is not a
        mean of segments, and re-aggregating it in Java costs ~70 ms per replicate, so its interval is
        reported for the mean METEOR segment score under ``METEOR_segment_mean`` (``point`` = that mean).
        """
        segment = {"ROUGE_L": corpus.rouge_l}
        if corpus.meteor_segments is not None:
            segment["METEOR_segment_mean"] = corpus.meteor_segments
        point = self.scores(corpus)
        replicates: dict[str, list[float]] = {name: [] for name in (*METRIC_NAMES[:4], "CIDEr", *segment)}
        draws = bootstrap_indices(units, n_boot, seed)
        for rows in tqdm(draws, total=n_boot, desc="text bootstrap", disable=not self.progress):
            for name, value in zip(METRIC_NAMES[:4], bleu_from_stats(corpus.bleu_stats[rows])):
                replicates[name].append(value)
            replicates["CIDEr"].append(cider_score([corpus.cider_test[i] for i in rows],
                                                   [corpus.cider_refs[i] for i in rows]))
            for name, values in segment.items():
                replicates[name].append(float(values[rows].mean()))
        out = {}
        for name, reps in replicates.items():
            centre = float(segment[name].mean()) if name in segment else point[name]
            out[name] = {**percentile_interval(centre, reps, level), "n_units": len(set(units))}
        if "METEOR_segment_mean" not in out:
            out["METEOR_segment_mean"] = {"point": None, "unavailable": corpus.meteor_unavailable}
        return out

    def close(self) -> None:
        """Stop the METEOR JVM, if one was started."""
        if self._meteor is not None:
            self._meteor.close()
            self._meteor = None

    def __enter__(self) -> TextScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def caption_metrics(hypotheses: Sequence[str], references: Sequence[Sequence[str]], tokenize: str = "ptb",
                    meteor: bool = True) -> dict[str, float | str | None]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of a corpus in one call (one JVM start for METEOR)."""
    with TextScorer(tokenize=tokenize, meteor=meteor) as scorer:
        return scorer.scores(scorer.prepare(hypotheses, references))
