"""How the ``rule`` family answers a task: hand-written rules, nothing learned.

The rules live in the task config (``task.<name>.rules``), so what the rule row does is visible
and editable without code. Three kinds:

* ``vader`` — sentiment with VADER (Hutto & Gilbert 2014, "VADER: A Parsimonious Rule-based Model
  for Sentiment Analysis of Social Media Text", ICWSM): a hand-built valence lexicon plus rules
  for negation, intensifiers, "but" and capitals (the lexicon ships in ``vaderSentiment``). A text
  is ``positive`` when the compound score is >= ``threshold`` (0.05 is VADER's documented cut-off
  for positive), else ``negative``. The compound score is the ROC-AUC score.
* ``patterns`` — a weighted list of regular expressions (URLs, money, phone numbers, prize
  words, ...) and a share-of-capitals rule; a text is ``positive`` (e.g. spam) when its summed
  weight reaches ``threshold``. The summed weight is the ROC-AUC score.
* ``keywords`` — topic lists: the class whose keywords occur most often wins; ties go to the
  class listed first, texts with no keyword to ``default``.

A task without ``rules`` is "unsupported" for the ``rule`` family: its cells print "—".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lineage.data.sources import DataError

KINDS = ("vader", "patterns", "keywords")


@dataclass
class RuleOutput:
    """Predicted class ids (N,) and, for binary tasks, (N,) scores of class 1 (else None)."""

    predictions: np.ndarray
    scores: np.ndarray | None


def _class_index(classes: Sequence[str], label: Any, where: str) -> int:
    label = str(label)
    if label not in classes:
        raise DataError(f"{where}={label!r} is not a class of the task; classes: {list(classes)}")
    return list(classes).index(label)


class _Binary:
    """A score per text; ``positive`` when score >= threshold, else ``negative``."""

    def __init__(self, cfg: Mapping[str, Any], classes: Sequence[str], where: str):
        if len(classes) != 2:
            raise DataError(f"{where}: kind {cfg['kind']!r} needs a binary task, got {classes}")
        self.pos = _class_index(classes, cfg.get("positive"), f"{where}.positive")
        self.neg = _class_index(classes, cfg.get("negative"), f"{where}.negative")
        if self.pos == self.neg:
            raise DataError(f"{where}: positive and negative must be different classes")
        self.threshold = float(cfg.get("threshold", 0.0))

    def score(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, texts: Sequence[str]) -> RuleOutput:
        s = self.score(texts)  # (N,) evidence for `positive`
        pred = np.where(s >= self.threshold, self.pos, self.neg).astype(np.int64)
        return RuleOutput(pred, s if self.pos == 1 else -s)


class VaderRules(_Binary):
    """VADER compound score in [-1, 1] (``threshold`` default 0.05)."""

    def __init__(self, cfg: Mapping[str, Any], classes: Sequence[str], where: str):
        cfg = {"threshold": 0.05, **cfg}
        super().__init__(cfg, classes, where)
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return np.array(
            [self.analyzer.polarity_scores(t)["compound"] for t in texts], dtype=np.float64
        )


class PatternRules(_Binary):
    """Summed weights of the regular expressions that match, plus a capitals rule.

    Config: ``patterns: {name: {regex: ..., weight: 1.0}}`` (case-insensitive unless
    ``case_sensitive: true``), ``capitals: {min_share: 0.3, min_letters: 20, weight: 1.0}``.
    """

    def __init__(self, cfg: Mapping[str, Any], classes: Sequence[str], where: str):
        super().__init__(cfg, classes, where)
        self.patterns: list[tuple[re.Pattern, float]] = []
        for name, spec in (cfg.get("patterns") or {}).items():
            if not isinstance(spec, Mapping) or "regex" not in spec:
                raise DataError(f"{where}.patterns.{name}: expected {{regex: ..., weight: ...}}")
            flags = 0 if spec.get("case_sensitive", False) else re.IGNORECASE
            try:
                pattern = re.compile(str(spec["regex"]), flags)
            except re.error as e:
                raise DataError(f"{where}.patterns.{name}.regex is invalid: {e}") from None
            self.patterns.append((pattern, float(spec.get("weight", 1.0))))
        self.capitals = dict(cfg.get("capitals") or {})
        if not self.patterns and not self.capitals:
            raise DataError(f"{where}: kind patterns needs `patterns` or `capitals`")

    def score_one(self, text: str) -> float:
        total = sum(w for p, w in self.patterns if p.search(text))
        if self.capitals:
            letters = [c for c in text if c.isalpha()]
            if len(letters) >= int(self.capitals.get("min_letters", 20)):
                share = sum(c.isupper() for c in letters) / len(letters)
                if share >= float(self.capitals.get("min_share", 0.3)):
                    total += float(self.capitals.get("weight", 1.0))
        return total

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([self.score_one(t) for t in texts], dtype=np.float64)


_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")


class KeywordRules:
    """The class with the most keyword hits (ties: the first listed; none: ``default``)."""

    def __init__(self, cfg: Mapping[str, Any], classes: Sequence[str], where: str):
        keywords = cfg.get("keywords") or {}
        if not keywords:
            raise DataError(f"{where}: kind keywords needs `keywords: {{class: [words]}}`")
        self.order = [_class_index(classes, c, f"{where}.keywords") for c in keywords]
        self.sets = [{str(w).lower() for w in words} for words in keywords.values()]
        default = cfg.get("default", next(iter(keywords)))
        self.default = _class_index(classes, default, f"{where}.default")
        self.binary = len(classes) == 2

    def __call__(self, texts: Sequence[str]) -> RuleOutput:
        counts = np.zeros((len(texts), len(self.sets)), dtype=np.int64)  # (N, K)
        for i, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for k, s in enumerate(self.sets):
                counts[i, k] = sum(w in s for w in words)
        best = counts.argmax(axis=1)  # first maximum: the class listed first
        pred = np.array([self.order[b] for b in best], dtype=np.int64)
        pred[counts.max(axis=1) == 0] = self.default
        return RuleOutput(pred, None)


def build_rules(cfg: Mapping[str, Any] | None, classes: Sequence[str], task: str):
    """The task's rule classifier: ``texts -> RuleOutput``; None when the task has no rules.

    Raises:
        DataError: unknown kind, a label that is not a class, an invalid regular expression.
    """
    if not cfg:
        return None
    where = f"task.{task}.rules"
    kind = cfg.get("kind")
    if kind == "vader":
        return VaderRules(cfg, classes, where)
    if kind == "patterns":
        return PatternRules(cfg, classes, where)
    if kind == "keywords":
        return KeywordRules(cfg, classes, where)
    raise DataError(f"{where}.kind={kind!r} is unknown; one of {', '.join(KINDS)}")
