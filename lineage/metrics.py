"""Metric definitions: one place that turns summed log-likelihoods into the published units.

Every family is scored by summing natural-log probabilities over exactly the same target tokens;
these pure functions convert the sums. Sum over sum, never a mean of batch means.
"""

from __future__ import annotations

import math

# name -> (unit, higher_is_better, format)
METRICS: dict[str, tuple[str, bool, str]] = {
    "ppl": ("perplexity", False, "{:.2f}"),
    "nll": ("nats per token", False, "{:.4f}"),
    "bits_per_token": ("bits per token", False, "{:.4f}"),
    "tokens": ("target tokens", True, "{:.0f}"),
    "oov_rate": ("share of words outside the vocabulary", False, "{:.4f}"),
    "unk_rate": ("share of targets that are <unk>", False, "{:.4f}"),
}


def perplexity_metrics(nll_sum: float, n_tokens: int, split: str) -> dict[str, float]:
    """Token-level metrics of one split from its summed negative log-likelihood.

    Args:
        nll_sum: sum over targets of -ln p(target | history), in nats.
        n_tokens: number of targets scored.
        split: metric prefix, ``"val"`` or ``"test"``.

    Returns:
        ``{split}/nll`` (nats per token), ``{split}/ppl``, ``{split}/bits_per_token``,
        ``{split}/tokens``.

    >>> m = perplexity_metrics(4 * math.log(10), 4, "test")  # four targets, each p = 1/10
    >>> round(m["test/ppl"], 9), round(m["test/bits_per_token"], 9)
    (10.0, 3.321928095)
    """
    if n_tokens <= 0:
        raise ValueError(f"no target tokens were scored on split {split!r}")
    nll = nll_sum / n_tokens
    return {
        f"{split}/nll": nll,
        f"{split}/ppl": math.exp(nll),
        f"{split}/bits_per_token": nll / math.log(2),
        f"{split}/tokens": float(n_tokens),
    }
