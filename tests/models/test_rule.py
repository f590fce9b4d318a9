"""The rule family: hand-written classes and transitions, a proper distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from conftest import CONF

from lineage.data.vocab import Vocabulary
from lineage.models.rule import RuleLM, UniformLM

VOCAB = Vocabulary(
    ["<unk>", "<eos>", "the", "cat", "sat", "on", "mat", "N", "it", "is", ",", "and"]
)


def _rule(**overrides) -> RuleLM:
    spec = yaml.safe_load((CONF / "model" / "rule.yaml").read_text())["lm"]
    spec = {k: v for k, v in spec.items() if not k.startswith("_")}
    spec.update(overrides)
    return RuleLM(VOCAB, **spec)


def test_words_fall_into_the_hand_written_classes():
    lm = _rule()
    cls = {w: lm.class_of(VOCAB.stoi[w]) for w in VOCAB.itos}
    assert cls["the"] == "determiner" and cls["on"] == "preposition" and cls["it"] == "pronoun"
    assert cls["is"] == "auxiliary" and cls["and"] == "conjunction" and cls[","] == "punctuation"
    assert cls["N"] == "number" and cls["<eos>"] == "eos"
    assert cls["cat"] == cls["<unk>"] == "open"


def test_probability_by_hand():
    # After "the" (determiner) the config weights are open 10, number 0.5, determiner 0.2,
    # punctuation 0.1, auxiliary 0.1: total 10.9. "cat" is one of 4 open words
    # (<unk>, cat, sat, mat), so P(cat | the) = 0.95 * (10 / 10.9) / 4 + 0.05 / 12.
    lm = _rule()
    expected = 0.95 * (10 / 10.9) / 4 + 0.05 / 12
    tokens = np.array([VOCAB.stoi["the"], VOCAB.stoi["cat"]])
    assert lm.log_probs(tokens)[1] == pytest.approx(math.log(expected), abs=1e-12)


def test_rows_are_distributions_even_when_a_class_is_absent():
    # this vocabulary has no member of some configured classes: their mass is renormalised away
    lm = _rule()
    rows = lm.next_token_log_probs(np.arange(len(VOCAB)).reshape(-1, 1))  # (V, V)
    assert np.allclose(np.logaddexp.reduce(rows, axis=1), 0.0, atol=1e-12)


def test_missing_transition_row_is_a_clear_error():
    spec = yaml.safe_load((CONF / "model" / "rule.yaml").read_text())["lm"]
    transitions = dict(spec["transitions"])
    del transitions["number"]
    with pytest.raises(ValueError, match="no row for class 'number'"):
        _rule(transitions=transitions)


def test_uniform_is_one_over_v():
    lm = UniformLM(VOCAB)
    assert np.allclose(lm.next_token_log_probs(np.zeros((3, 2), dtype=np.int64)), -math.log(12))
