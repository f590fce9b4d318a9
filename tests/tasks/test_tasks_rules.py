"""The rule family's classifiers, with the rules written in conf/task/: decisions on hand-written
sentences, and clear errors for rules that do not fit the task."""

from __future__ import annotations

import pytest
from conftest import CONF
from omegaconf import OmegaConf

from lineage.data.sources import DataError
from lineage.tasks.rules import build_rules


def _rules(task: str):
    cfg = OmegaConf.load(CONF / "task" / f"{task}.yaml")
    classes = list(cfg.classes) if cfg.get("classes") else ["neg", "pos"]
    return build_rules(OmegaConf.to_container(cfg.rules), classes, task), classes


def test_vader_sentiment_decisions():
    rules, classes = _rules("sst2")
    texts = [
        "a gorgeous , witty , seductive movie .",
        "one of the most moving and beautiful films of the year .",
        "a dull , tedious and thoroughly awful mess .",
        "the plot is predictable and the acting is terrible .",
    ]
    out = rules(texts)
    assert [classes[i] for i in out.predictions] == ["1", "1", "0", "0"]
    assert out.scores[0] > 0.5 and out.scores[2] < -0.5  # VADER's compound score


def test_spam_patterns_decisions():
    rules, classes = _rules("sms_spam")
    spam = [
        "WINNER!! You have been selected to receive a £900 prize reward! Call 09061701461 now.",
        "FREE entry in 2 a wkly comp to win FA Cup final tkts. Text FA to 87121 to receive entry",
        "URGENT! Your mobile No. was awarded £2000 Bonus Caller Prize. Call 09058094455",
    ]
    ham = [
        "Ok lar... Joking wif u oni...",
        "I'll be home by 7, can you pick up some milk?",
        "Sorry, I'll call later in the meeting.",
        "Did you win the game last night?",  # one prize word alone is not enough
    ]
    out = rules(spam + ham)
    assert [classes[i] for i in out.predictions] == ["spam"] * 3 + ["ham"] * 4
    assert out.scores[:3].min() > out.scores[3:].max()


def test_topic_keywords_decisions():
    rules, classes = _rules("ag_news")
    texts = [
        "The Yankees beat the Red Sox in the playoff game.",
        "Microsoft releases new software to fight spam on the internet.",
        "Oil prices push stocks lower as investors fear weak earnings.",
        "Troops killed in Iraq as leaders meet for peace talks.",
        "Nothing here matches any list.",
    ]
    out = rules(texts)
    assert [classes[i] for i in out.predictions] == [
        "Sports",
        "Sci/Tech",
        "Business",
        "World",
        "World",  # the last: the default class
    ]
    assert out.scores is None


def test_bad_rules_are_named():
    with pytest.raises(DataError, match=r"task.t.rules.positive='yes' is not a class"):
        build_rules({"kind": "vader", "positive": "yes", "negative": "0"}, ["0", "1"], "t")
    with pytest.raises(DataError, match=r"task.t.rules.patterns.bad.regex is invalid"):
        build_rules(
            {
                "kind": "patterns",
                "positive": "1",
                "negative": "0",
                "patterns": {"bad": {"regex": "("}},
            },
            ["0", "1"],
            "t",
        )
    with pytest.raises(DataError, match="kind 'vader' needs a binary task"):
        build_rules({"kind": "vader", "positive": "a", "negative": "b"}, ["a", "b", "c"], "t")
    with pytest.raises(DataError, match="kind='regex' is unknown"):
        build_rules({"kind": "regex"}, ["0", "1"], "t")
    assert build_rules(None, ["0", "1"], "t") is None
