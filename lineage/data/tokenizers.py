"""Word tokenisation: text lines -> sentences of word tokens.

Each returned sentence later gets one ``<eos>`` (design.md §3.1). Two tokenisers:

* ``whitespace`` — ``str.split()``: right for pre-tokenised corpora (PTB, WikiText).
* ``nltk`` — NLTK's rule-based word tokenizer (:class:`nltk.tokenize.NLTKWordTokenizer`, the
  improved Treebank tokenizer behind ``word_tokenize``). ``word_tokenize`` itself needs the
  downloaded ``punkt`` model and fails offline, so it is not used; sentence splitting (for
  ``line_is_sentence=False``) uses an untrained :class:`nltk.tokenize.PunktSentenceTokenizer`,
  whose default parameters need no download.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache

from lineage.data.sources import DataError
from lineage.data.vocab import EOS, UNK

TOKENIZERS = ("whitespace", "nltk")


def check_tokenizer(tokenizer: str) -> None:
    """Raise :class:`DataError` unless ``tokenizer`` is one of :data:`TOKENIZERS`."""
    if tokenizer not in TOKENIZERS:
        raise DataError(
            f"unknown tokenizer {tokenizer!r}; corpus.tokenizer must be one of: "
            f"{', '.join(TOKENIZERS)}"
        )


# ``<unk>`` and ``<eos>`` written in the text (pre-unked corpora) stay one token each
_SPECIALS = re.compile(f"({re.escape(UNK)}|{re.escape(EOS)})")


@lru_cache(maxsize=1)
def _nltk_word() -> Callable[[str], list[str]]:
    from nltk.tokenize import NLTKWordTokenizer

    tokenize = NLTKWordTokenizer().tokenize

    def words(text: str) -> list[str]:
        if "<" not in text:
            return tokenize(text)
        out: list[str] = []
        for i, part in enumerate(_SPECIALS.split(text)):
            out.extend([part] if i % 2 else tokenize(part))  # odd parts: the specials
        return out

    return words


@lru_cache(maxsize=1)
def _nltk_sentences() -> Callable[[str], list[str]]:
    from nltk.tokenize import PunktSentenceTokenizer

    return PunktSentenceTokenizer().tokenize


def iter_sentences(
    lines: Iterable[str],
    tokenizer: str = "whitespace",
    lowercase: bool = False,
    line_is_sentence: bool = True,
    skip_empty_lines: bool = True,
) -> Iterator[list[str]]:
    """Lazy version of :func:`tokenize` (large corpora never hold every sentence at once)."""
    check_tokenizer(tokenizer)
    words = str.split if tokenizer == "whitespace" else _nltk_word()
    split_sentences = None if line_is_sentence else _nltk_sentences()
    for line in lines:
        if not line.strip():
            if not skip_empty_lines:
                yield []
            continue
        pieces = [line] if split_sentences is None else split_sentences(line)
        for piece in pieces:
            toks = words(piece)
            if not toks:
                continue
            # Lowercase after tokenising: the sentence splitter uses capitals as a cue.
            yield [t.lower() for t in toks] if lowercase else toks


def tokenize(
    lines: Iterable[str],
    tokenizer: str = "whitespace",
    lowercase: bool = False,
    line_is_sentence: bool = True,
    skip_empty_lines: bool = True,
) -> list[list[str]]:
    """Split text lines into sentences of word tokens.

    Args:
        lines: text lines (no newlines).
        tokenizer: ``"whitespace"`` or ``"nltk"`` (see the module docstring).
        lowercase: lowercase every token.
        line_is_sentence: a line is one sentence; if False a line is a paragraph or document,
            split into sentences by Punkt before tokenising.
        skip_empty_lines: drop blank lines; if False each blank line is an empty sentence (the
            WikiText convention: every line, even empty, ends with ``<eos>``).

    Returns:
        A list of sentences, each a list of tokens.

    Raises:
        DataError: unknown tokenizer name.

    >>> tokenize(["a b", "", "c"], skip_empty_lines=False)
    [['a', 'b'], [], ['c']]
    """
    return list(iter_sentences(lines, tokenizer, lowercase, line_is_sentence, skip_empty_lines))
