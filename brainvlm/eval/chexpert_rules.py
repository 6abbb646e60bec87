"""The CheXpert labeler's phrase lists, its text cleaning, and its negation and uncertainty patterns as text rules.

The CheXpert labeler (stanfordmlgroup/chexpert-labeler, MIT) finds mentions with the phrase lists vendored
in ``chexpert_phrases/`` (see its README) and classifies each mention by matching dependency-graph patterns
(``patterns/negation.txt``, ``pre_negation_uncertainty.txt``, ``post_negation_uncertainty.txt``) from the
mention's node. Without a dependency parser, each pattern that matters becomes a rule on the words before
or after the mention in its sentence; every rule below names the pattern lines it stands for
(``negation.txt:154`` is line 154 of the labeler's ``patterns/negation.txt``).

A rule is a *cue* and a *gap*: the cue is a phrase, the gap the words allowed between the cue and the
mention. A gap never crosses a sentence or clause end (``.``, ``;``, ``:``) nor a word that starts a new
statement ("is", "there", "with", "which", "but" ...), so "No effusion. There is pneumonia." negates only
the effusion. Gaps that allow commas reach along a list ("no effusion, pneumothorax or edema"), as the
labeler's propagation along conjunctions does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import resources

PHRASES_FOLDER = "chexpert_phrases"
NO_FINDING = "No Finding"
CARDIOMEGALY = "Cardiomegaly"
ENLARGED_CARDIOMEDIASTINUM = "Enlarged Cardiomediastinum"
SUPPORT_DEVICES = "Support Devices"
HEART_FAILURE = ("chf", "heart failure")  # the Edema mentions that add an uncertain Cardiomegaly (aggregate.py)
# Edema mentions the labeler always calls uncertain unless negated (post_negation_uncertainty.txt:149-152).
UNCERTAIN_MENTIONS = ("vascular congestion", "pulmonary congestion", "indistinctness", "vascular prominence")
# The head nouns of the "stable heart size" rules (post_negation_uncertainty.txt:4-20).
CARDIAC_WORDS = re.compile(r"cardiomediastinal|pericardial|mediastinal|mediastinum|cardiomediastinum|contour"
                           r"|configuration|silhouette|size|heart|shadow")


def observation_name(stem: str) -> str:
    """A phrase file's observation: ``enlarged_cardiomediastinum`` -> ``Enlarged Cardiomediastinum``."""
    return stem.replace("_", " ").title()


def read_phrases(kind: str) -> dict[str, tuple[str, ...]]:
    """Observation -> phrases of ``chexpert_phrases/<kind>/`` (``mention`` or ``unmention``), as the labeler
    reads them: each line stripped, ``_`` read as a space (``_line_`` is " line ", a word on its own)."""
    folder = resources.files(__package__) / PHRASES_FOLDER / kind
    out = {}
    for item in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if item.name.endswith(".txt"):
            lines = item.read_text(encoding="utf-8").splitlines()
            out[observation_name(item.name[:-4])] = tuple(ln.strip().replace("_", " ") for ln in lines if ln.strip())
    return out


def positional_unmentions(mentions: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The unmentions the labeler derives for the heart and mediastinum ("over the heart", "in the left
    cardiac silhouette": a position, not a size), replacing any unmention file of those two observations."""
    places = [f"{at}{side}" for at in ("over the", "overly the", "in the") for side in ("", " superior", " left",
                                                                                       " right")]
    heart = [f"{place} {phrase.replace('the ', '')}" for place in places for phrase in mentions[CARDIOMEGALY]
             if phrase not in ("cardiomegaly", "cardiac enlargement")]
    mediastinum = [f"{place} {phrase}" for place in places for phrase in mentions[ENLARGED_CARDIOMEDIASTINUM]]
    return {CARDIOMEGALY: tuple(heart), ENLARGED_CARDIOMEDIASTINUM: tuple(mediastinum)}


MENTIONS = read_phrases("mention")
UNMENTIONS = {**read_phrases("unmention"), **positional_unmentions(MENTIONS)}


def clean_report(text: str) -> str:
    """The labeler's cleaning: lower case, "and/or" and "a/b" read as "or", a space after every period and
    comma, runs of whitespace (line breaks included) as one space, empty sentences dropped."""
    text = text.lower().replace("and/or", "or")
    text = re.sub(r"(?<=[a-z])/(?=[a-z])", " or ", text)
    text = text.replace("..", ".").replace(".", ". ").replace(",", ", ")
    return re.sub(r"\.\s+\.", ".", " ".join(text.split()))


def sentences(clean_text: str) -> list[str]:
    """Sentences of a cleaned report: they end at ``.``, ``?`` or ``!`` before a space (the labeler uses NLTK)."""
    return [part for part in re.split(r"(?<=[.?!]) ", clean_text) if part.strip()]


@dataclass(frozen=True)
class Mention:
    """One phrase match in a sentence; ``words`` is the span widened to whole words ("effusions")."""

    observation: str
    phrase: str
    start: int
    end: int
    words: tuple[int, int]


def _overlaps(span: tuple[int, int], others: list[tuple[int, int]]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in others)


def _whole_words(sentence: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` without a phrase's edge spaces, widened to the words it touches."""
    while start < end and sentence[start] == " ":
        start += 1
    while end > start and sentence[end - 1] == " ":
        end -= 1
    while start > 0 and sentence[start - 1] != " ":
        start -= 1
    while end < len(sentence) and sentence[end] not in " ,.;:?!":
        end += 1
    return start, end


def _occurrences(phrase: str, sentence: str) -> list[tuple[int, int]]:
    """Spans of a literal phrase in a sentence, left to right, not overlapping each other (as ``re.finditer``)."""
    spans, start = [], sentence.find(phrase)
    while start >= 0:
        spans.append((start, start + len(phrase)))
        start = sentence.find(phrase, start + len(phrase))
    return spans


def find_mentions(sentence: str) -> list[Mention]:
    """Every phrase of every observation in a cleaned sentence, as the labeler matches them: anywhere in the
    text (phrases are word starts: "atelecta", "calcifi"), overlaps kept, but not inside an unmention of
    the same observation ("calcified nodul" is no Lung Lesion, "pericardial effusion" no Pleural Effusion)."""
    found = []
    for observation, phrases in MENTIONS.items():
        spans = [(start, end, phrase) for phrase in phrases for start, end in _occurrences(phrase, sentence)]
        if not spans:
            continue
        blocked = [span for phrase in UNMENTIONS.get(observation, ()) for span in _occurrences(phrase, sentence)]
        found.extend(Mention(observation, phrase, start, end, _whole_words(sentence, start, end))
                     for start, end, phrase in sorted(spans) if not _overlaps((start, end), blocked))
    return found


# --- Rules -------------------------------------------------------------------------------------------------

# Words that start a clause, and words that start a new statement: a cue before them does not reach a mention
# after them ("no effusion; there is pneumonia"). After a mention, the verb belongs to the rule's cue ("X has
# resolved"), so a verb between the mention and the cue means the cue is another subject's ("X is present and
# lungs are clear").
_CLAUSE = r"(?:but|however|although|though|whereas|while|which)\b"
_VERB = r"(?:is|are|was|were|be|been|has|have|had|there)\b"
_BREAK = rf"(?:{_CLAUSE}|{_VERB}|(?:with|that|after|given|and (?:the|a|an|there))\b)"


def _gap(words: int, lists: bool = False) -> str:
    """Up to ``words`` words without a break word; with ``lists``, words may end with a comma."""
    token = r"[^\s.;:]+" if lists else r"[^\s,.;:]+"
    return rf"(?:(?!{_BREAK}){token} ){{0,{words}}}"


@dataclass(frozen=True)
class Rule:
    """A cue before the mention (``cue`` then ``gap`` up to the mention) or after it (``after``), with the
    labeler's pattern lines it stands for. ``cardiac``: only for mentions naming the heart or mediastinum."""

    source: str
    cue: str = ""
    gap: str = ""
    after: str = ""
    cardiac: bool = False

    @cached_property
    def _cue_re(self) -> re.Pattern:
        return re.compile(rf"(?<![\w-])(?:{self.cue}) ")

    @cached_property
    def _gap_re(self) -> re.Pattern:
        return re.compile(self.gap)

    @cached_property
    def _after_re(self) -> re.Pattern:
        return re.compile(rf"(?: (?!{_CLAUSE}|{_VERB})[^\s,.;:]+){{0,4}}? (?:{self.after})\b")

    def distance(self, before: str) -> int | None:
        """Characters between the nearest cue before the mention and the mention (None: no cue reaches it)."""
        if not self.cue:
            return None
        nearest = None
        for match in self._cue_re.finditer(before):
            if self._gap_re.fullmatch(before, match.end()):
                nearest = len(before) - match.end()
        return nearest

    def follows(self, after: str) -> bool:
        """Whether the words after the mention hold the rule's cue (a few words may stand between)."""
        return bool(self.after) and self._after_re.match(after) is not None


LIST = _gap(12, lists=True)  # a clause, along a list
NEAR = _gap(4)  # a noun phrase: "resolution of the left pleural effusion"
ADJACENT = _gap(1)

PRE_NEGATION_UNCERTAINTY = (  # matched first: "cannot exclude", "no new"
    Rule("pre_negation_uncertainty.txt:4", r"(?:cannot|can not|could not) (?:be )?exclude", LIST),
    Rule("pre_negation_uncertainty.txt:7", r"(?:does|do|did|is|are|was|were) not exclude", LIST),
    Rule("pre_negation_uncertainty.txt:10-16", r"no new(?: areas? of)?", LIST),
    Rule("pre_negation_uncertainty.txt:19", r"(?:cannot|can not|could not|not) rule out", LIST),
    Rule("pre_negation_uncertainty.txt:23", r"no evidence to rule out", LIST),
    Rule("pre_negation_uncertainty.txt:4,19", after=r"(?:cannot|can not|could not) be (?:\w+ly )?"
                                                    r"(?:excluded|ruled out)"),
    Rule("pre_negation_uncertainty.txt:7", after=r"(?:(?:is|are|was|were) )?not (?:\w+ly )?excluded"),
)
NEGATION_AFTER = (  # "X is normal", "X has resolved"
    Rule("negation.txt:15,34-43,49", after=r"(?:(?:is|are|was|were|appears?|remains?)(?: \w+)? )?(?:within|at) "
                                          r"(?:the )?(?:normal limits|(?:upper |high )?limits? of normal)"),
    Rule("negation.txt:8-12,46,139", after=r"(?:(?:is|are|was|were|appears?|remains?|seems?|looks?)"
                                          r"(?: (?:now|otherwise|again|overall|still|also|\w+ly))? )?"
                                          r"(?:normal|unremarkable)"),
    Rule("negation.txt:30", after=r"(?:(?:is|are|was|were) )?absent"),
    Rule("negation.txt:64", after=r"(?:(?:has|have|had|is|are|was|were) )?(?:been )?excluded"),
    Rule("negation.txt:69", after=r"(?:has|have|had)(?: since| now| \w+ly)? resolved"),
    Rule("negation.txt:104", after=r"(?:is|are|was|were) previously (?:demonstrated|visualized)"),
    Rule("negation.txt:116", after=r"(?:is|are|was|were) not enlarged"),
    Rule("negation.txt:122-123", after=r"(?:(?:has|have|had|is|are|was|were) )?(?:been )?(?:\w+ )?removed"),
    Rule("negation.txt:126-127", after=r"(?:is|are|was|were) no longer seen"),
    Rule("negation.txt:143-144", after=r"(?:(?:has|have|had|is|are|was|were) )?(?:\w+ )?clear(?:ed)?"),
    Rule("negation.txt:151", after=r"with (?:\w+ )?interval resolution"),
)
NEGATION_BEFORE = (  # "no X", "without X", "resolution of X"
    # "no new" is uncertain (above), "no longer seen" and "no change in X" are rules of their own.
    Rule("negation.txt:2,5,29,66,72,84,91,101,113,154-155",
         r"no(?! new | longer | (?:significant |interval |appreciable )?changes? in )", LIST),
    Rule("negation.txt:31,54,75,78,87,119,131,156", r"without", LIST),
    Rule("negation.txt:154", r"not", _gap(2)),
    Rule("negation.txt:107,110", r"no (?:[^\s.;:]+ ){0,6}?to (?:suggest|explain|diagnose)", _gap(3)),
    Rule("negation.txt:53", r"rather than", LIST),
    Rule("negation.txt:56", r"clear(?:ed|ing)? of", LIST),
    Rule("negation.txt:57", r"rule out|ruled out|rules out|ruling out", LIST),
    Rule("negation.txt:60", r"(?:history|free|disappearance|resolution|drainage|removal) of", LIST),
    Rule("negation.txt:61", r"negative for", LIST),
    Rule("negation.txt:64", r"exclud(?:e|es|ed|ing)", LIST),
    Rule("negation.txt:104", r"previously (?:demonstrated|visualized)", _gap(2)),
    Rule("negation.txt:8,11,22,134,138", r"normal|unremarkable", _gap(3)),
    Rule("negation.txt:19", r"obscur(?:e|es|ing)", _gap(3), cardiac=True),  # obscuring the cardiac silhouette
)
UNCERTAINTY_BEFORE = (  # "possible X", "may represent X", "concerning for X"
    Rule("post_negation_uncertainty.txt:43,56,60", r"possible|possibly|presumably|probable|questionable"
                                                   r"|suspect|suspected|suspicious", LIST),
    Rule("post_negation_uncertainty.txt:44,52", r"question(?:ed)?(?: of)?|suggestion of", LIST),
    # "may be consistent with X" (post_negation_uncertainty.txt:124), "may be due to X" (:76), "could be related
    # to X" (:79): the verb phrase is part of the cue, so that its "be" and "with" do not end the cue's reach.
    Rule("post_negation_uncertainty.txt:47,67,76,79,92,124", r"(?:may|might|would|could|can)(?: also)?(?: be)?"
                                                             r"(?: (?:consistent|compatible) with| (?:due|related"
                                                             r"|secondary) to)?", LIST),
    Rule("post_negation_uncertainty.txt:23,30,54", r"(?:suspicious|worrisome|concern|concerning|suspicion) for",
         LIST),
    Rule("post_negation_uncertainty.txt:53", r"favou?r(?:s|ed|ing)?|consider(?:s|ed|ing)?", NEAR),
    Rule("post_negation_uncertainty.txt:64", r"maybe", LIST),
    Rule("post_negation_uncertainty.txt:33", r"versus|vs\.?", _gap(3)),
    Rule("post_negation_uncertainty.txt:73", r"secondary to", LIST),
    Rule("post_negation_uncertainty.txt:82", r"(?:is|are|be|was|were) compatible with", LIST),
    Rule("post_negation_uncertainty.txt:89", r"differential diagnosis (?:includes?|including)", LIST),
    Rule("post_negation_uncertainty.txt:99,127,130", r"correlation for symptoms of|correlate clinically for"
                                                     r"(?: (?:evidence|signs?|symptoms?) of)?", NEAR),
    Rule("post_negation_uncertainty.txt:118", r"obscur(?:e|es|ed|ing)", _gap(3)),
    Rule("post_negation_uncertainty.txt:102", r"borderline", ADJACENT, cardiac=True),
    Rule("post_negation_uncertainty.txt:4,20", r"(?:stable|unchanged)(?: appearance of)?", _gap(3), cardiac=True),
    Rule("post_negation_uncertainty.txt:9", r"no (?:significant |interval |appreciable )?changes? in", _gap(3),
         cardiac=True),
)
UNCERTAINTY_AFTER = (  # "X is possible", "X versus Y", "X or Y"
    Rule("post_negation_uncertainty.txt:56,96", after=r"(?:is|are|was|were) (?:also |still )?(?:possible|suspected)"),
    Rule("post_negation_uncertainty.txt:105", after=r"(?:may|might|could|can|possibly)(?: also)? be present"),
    Rule("post_negation_uncertainty.txt:121", after=r"(?:may|might|could|can) appear"),
    Rule("post_negation_uncertainty.txt:108,111", after=r"(?:(?:is|are|was|were) )?(?:poorly|incompletely) "
                                                        r"evaluated"),
    Rule("post_negation_uncertainty.txt:114-115", after=r"(?:(?:is|are|was|were) )?not (?:well )?(?:evaluated|"
                                                        r"visualized)"),
    # "not clearly seen" is uncertain, but "X is not seen" matches no pattern at all and stays positive.
    Rule("post_negation_uncertainty.txt:133,140", after=r"(?:(?:is|are|was|were) )?not (?:clearly seen|appreciated)"),
    Rule("post_negation_uncertainty.txt:118", after=r"(?:(?:is|are|was|were) )?(?:partially |partly )?obscured"),
    Rule("post_negation_uncertainty.txt:38", after=r"(?:is|are) less likely"),
    Rule("post_negation_uncertainty.txt:143", after=r"(?:may|might|could) (?:also )?have this appearance"),
    Rule("post_negation_uncertainty.txt:34", after=r"versus|vs"),
    Rule("post_negation_uncertainty.txt:4-17", after=r"(?:(?:is|are|was|were|remains?|appears?) )?(?:stable|"
                                                     r"unchanged|not changed|similar to (?:the )?prior)",
         cardiac=True),
    Rule("post_negation_uncertainty.txt:9", after=r"(?:has|have) not changed", cardiac=True),
)
POSITIVE_SOURCE = "no rule: positive"
OR_SOURCE = "post_negation_uncertainty.txt:155-156"
# "X or Y" between two mentions, a few words on either side of the "or".
_OR_BETWEEN = re.compile(r"(?: [^\s,.;:]+){0,5},? or(?: [^\s,.;:]+){0,3} ")


def _nearest(rules: tuple[Rule, ...], before: str, cardiac: bool) -> tuple[int, str] | None:
    """``(distance, source)`` of the cue of ``rules`` nearest the mention, or None."""
    found = [(d, rule.source) for rule in rules if (cardiac or not rule.cardiac)
             and (d := rule.distance(before)) is not None]
    return min(found, default=None)


def _follows(rules: tuple[Rule, ...], after: str, cardiac: bool) -> str | None:
    """The source of the first of ``rules`` whose cue follows the mention, or None."""
    return next((rule.source for rule in rules if (cardiac or not rule.cardiac) and rule.follows(after)), None)


def in_or_pair(sentence: str, mention: Mention, others: Sequence[Mention]) -> bool:
    """Whether another mention is joined to this one by "or" ("atelectasis or early pneumonia"); an "or"
    between a mention and a word that is none ("new or worsening effusion") is not a conjunction of findings."""
    start, end = mention.words
    for other in others:
        left, right = (other.words[1], start) if other.words[1] <= start else (end, other.words[0])
        between = [m for m in others if left <= m.words[0] and m.words[1] <= right]
        if left <= right and not between and _OR_BETWEEN.fullmatch(sentence[left:right]):
            return True
    return False


def classify(sentence: str, mention: Mention, others: Sequence[Mention] = ()) -> tuple[int, str]:
    """``(label, rule)`` of one mention: -1 uncertain, 0 negative, 1 positive, in the labeler's order
    (pre-negation uncertainty, then negation, then post-negation uncertainty); ``rule`` names the pattern.

    Between a negation cue and an uncertainty cue before the mention, the nearer one is the one the mention
    hangs on ("possible effusion, no pneumothorax"; "no effusion, possible atelectasis"). ``others``: the
    sentence's other mentions, for "X or Y".
    """
    start, end = mention.words
    before, after = sentence[:start], sentence[end:]
    if sentence.startswith("the ", start):  # "the heart": its article belongs to the words before, for breaks
        before += "the "
    cardiac = CARDIAC_WORDS.search(sentence[start:end]) is not None
    if pre := _nearest(PRE_NEGATION_UNCERTAINTY, before, cardiac):
        return -1, pre[1]
    if source := _follows(PRE_NEGATION_UNCERTAINTY, after, cardiac):
        return -1, source
    if source := _follows(NEGATION_AFTER, after, cardiac):
        return 0, source
    negation = _nearest(NEGATION_BEFORE, before, cardiac)
    uncertainty = _nearest(UNCERTAINTY_BEFORE, before, cardiac)
    if negation and (uncertainty is None or negation[0] <= uncertainty[0]):
        return 0, negation[1]
    if uncertainty:
        return -1, uncertainty[1]
    if source := _follows(UNCERTAINTY_AFTER, after, cardiac):
        return -1, source
    if mention.phrase in UNCERTAIN_MENTIONS:
        return -1, "post_negation_uncertainty.txt:149-152"
    if in_or_pair(sentence, mention, others):
        return -1, OR_SOURCE
    return 1, POSITIVE_SOURCE
