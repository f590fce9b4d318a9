"""Recurrent language models: Elman RNN, LSTM and GRU, one module, the cell chosen by config.

The word-level recurrent LM of Mikolov et al. (2010), "Recurrent neural network based language
model" (Interspeech), trained as in Zaremba, Sutskever & Vinyals (2014), "Recurrent Neural Network
Regularization" (arXiv:1409.2329): an embedding, a stack of recurrent layers, a softmax over the
vocabulary, stateful truncated BPTT (the training loop lives in :class:`lineage.modules.neural.
NeuralLM`), dropout on the non-recurrent connections only (embedding output, between layers, before
the softmax), every parameter initialised uniformly in ``[-init_range, init_range]``.

Cells:

* ``rnn`` — Elman (1990), "Finding structure in time" (Cognitive Science 14): ``tanh`` recurrence.
* ``lstm`` — Hochreiter & Schmidhuber (1997), "Long short-term memory", with the forget gate of
  Gers et al. (2000) and no forget-gate bias offset (Zaremba's code and the TensorFlow
  re-implementation use ``forget_bias=0``).
* ``gru`` — Cho et al. (2014), "Learning phrase representations using RNN encoder-decoder".

Options users expect: ``tie_weights`` — the softmax shares the embedding matrix (Inan et al. 2016,
"Tying word vectors and word classifiers"; Press & Wolf 2016, "Using the output embedding to
improve language models"); ``variational`` — the same dropout mask at every time step of a batch
(Gal & Ghahramani 2016, "A theoretically grounded application of dropout in recurrent neural
networks"), applied, as Zaremba's dropout, to non-recurrent connections.

Plain PyTorch: no Lightning here. The net follows the protocol in :mod:`lineage.modules.neural`.
"""

from __future__ import annotations

import torch
from torch import nn

from lineage.interface import Capability

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

# cell -> (year, era, citation): one row per family in every table
IDENTITY = {
    "rnn": (1990, "1990s", "Elman 1990; Mikolov et al. 2010 (RNN LM)"),
    "lstm": (1997, "1990s–2010s", "Hochreiter & Schmidhuber 1997; Zaremba et al. 2014 (LSTM LM)"),
    "gru": (2014, "2010s", "Cho et al. 2014 (GRU); trained as Zaremba et al. 2014"),
}


class LockedDropout(nn.Module):
    """Dropout whose mask is shared by every time step of a (B, T, H) batch (Gal & Ghahramani)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(keep) / keep  # (B, 1, H)
        return x * mask  # (B, T, H)


class RecurrentLM(nn.Module):
    """Embedding -> ``num_layers`` recurrent layers -> linear softmax layer.

    Args:
        vocab_size: V, from the corpus (passed by the module layer).
        cell: ``"rnn"`` (tanh Elman), ``"lstm"`` or ``"gru"``.
        hidden_size: units per recurrent layer (Zaremba small 200, medium 650, large 1500).
        num_layers: stacked recurrent layers (Zaremba: 2).
        embedding_size: word vector size; default ``hidden_size`` (as in Zaremba).
        dropout: probability on the non-recurrent connections (embedding output, between
            layers, before the softmax); 0 for Zaremba small, 0.5 medium, 0.65 large.
        variational: one dropout mask per sequence instead of per time step.
        tie_weights: share the embedding matrix with the softmax layer; needs
            ``embedding_size == hidden_size``.
        init_range: every parameter ~ U(-init_range, init_range) (Zaremba: 0.1 small, 0.05
            medium, 0.04 large).

    Raises:
        ValueError: unknown ``cell``, sizes < 1, ``dropout`` outside [0, 1), or ``tie_weights``
            with different embedding and hidden sizes — the message names the key and value.
    """

    capabilities = frozenset({Capability.LOG_PROB, Capability.FEATURES, Capability.GENERATE})

    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        hidden_size: int = 200,
        num_layers: int = 2,
        embedding_size: int | None = None,
        dropout: float = 0.0,
        variational: bool = False,
        tie_weights: bool = False,
        init_range: float = 0.1,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"model.net.cell={cell!r} is unknown; use one of {sorted(CELLS)}")
        embedding_size = hidden_size if embedding_size is None else embedding_size
        for key, value in (
            ("vocab_size", vocab_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
            ("embedding_size", embedding_size),
        ):
            if int(value) < 1:
                raise ValueError(f"model.net.{key} must be >= 1, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.net.dropout must be in [0, 1), got {dropout}")
        if tie_weights and embedding_size != hidden_size:
            raise ValueError(
                f"model.net.tie_weights=true needs model.net.embedding_size ({embedding_size}) "
                f"== model.net.hidden_size ({hidden_size})"
            )
        self.cell = cell
        self.family = cell
        self.year, self.era, self.citation = IDENTITY[cell]
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        # One module per layer (not nn.LSTM(num_layers=…)) so dropout between layers can be
        # per-step or variational; the time loop stays inside PyTorch's kernel either way.
        self.layers = nn.ModuleList(
            CELLS[cell](
                embedding_size if i == 0 else hidden_size,
                hidden_size,
                batch_first=True,
                **({"nonlinearity": "tanh"} if cell == "rnn" else {}),
            )
            for i in range(num_layers)
        )
        self.drop = LockedDropout(dropout) if variational else nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        self.reset_parameters(init_range)
        if tie_weights:  # after init: the shared matrix keeps the embedding's U(-r, r) init
            self.decoder.weight = self.embedding.weight

    def reset_parameters(self, init_range: float) -> None:
        """Every parameter (biases included) ~ U(-init_range, init_range), as Zaremba et al."""
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embedding

    def set_input_embeddings(self, embedding: nn.Embedding) -> None:
        self.embedding = embedding

    def hidden(self, tokens: torch.Tensor, state=None):
        """Last layer's states ``(B, T, H)`` and the new state (a tuple, one entry per layer).

        Args:
            tokens: (B, T) int64 ids.
            state: None (zeros) or the state returned by the previous call.
        """
        x = self.drop(self.embedding(tokens))  # (B, T, E)
        new_state = []
        for i, layer in enumerate(self.layers):
            x, layer_state = layer(x, None if state is None else state[i])  # (B, T, H)
            new_state.append(layer_state)
            x = self.drop(x)  # between layers and before the softmax (non-recurrent only)
        return x, tuple(new_state)

    def forward(self, tokens: torch.Tensor, state=None):
        """Next-token logits ``(B, T, V)`` at each position and the new state."""
        hidden, state = self.hidden(tokens, state)  # (B, T, H)
        return self.decoder(hidden), state  # (B, T, V)
