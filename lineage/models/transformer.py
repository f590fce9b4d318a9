"""A GPT-style causal decoder language model (2017–): the last rung of the lineage.

A stack of pre-LayerNorm transformer blocks (Vaswani et al. 2017, "Attention is all you need";
decoder-only language modelling as in Radford et al. 2018, "Improving language understanding by
generative pre-training"): token embedding + learned or sinusoidal positions, ``n_layers`` blocks
of causal multi-head self-attention and a position-wise MLP, each behind a LayerNorm and added to
the residual stream (the pre-LN placement of GPT-2, which trains without a long warm-up), a final
LayerNorm, and the output layer, optionally tied to the input embedding (Press & Wolf 2017).
Attention is ``torch.nn.functional.scaled_dot_product_attention`` with a causal mask.

The net follows the ``NeuralLM`` protocol (``lineage.modules.neural``):

* ``forward(tokens, state=None) -> (logits, state)`` and ``hidden(tokens, state=None) ->
  (hidden, state)``. ``state`` is the key/value cache: every layer's keys and values of the tokens
  seen so far, and those tokens (whose count is the position offset of the next token). Generation
  feeds one new token per call and attends to the cache, so each new token costs one position's
  work, not a re-encoding of the whole context.
* The model sees at most ``max_len`` tokens. Every position is conditioned on the last
  ``max_len`` tokens up to and including it, whatever the input length: an input longer than
  ``max_len`` (``next_token_log_probs`` with a long context, features of a long text) is encoded as
  one window for the first ``max_len`` positions and one window per later position, exact and
  ``max_len`` times costlier per position. The data module never sends such inputs: window
  batching serves at most ``seq_len = max_len`` inputs per row, with sliding-window evaluation.
* When a cached call would exceed ``max_len``, the cache cannot slide (absolute positions change
  when the window moves), so the last ``max_len`` tokens are re-encoded from scratch: exactly what
  an uncached call sees. Past ``max_len`` tokens each new token therefore costs one window's
  encoding — still a constant per token, so generation stays linear in the number of new tokens.

No Lightning here: ``NeuralLM`` trains, scores and samples this module.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lineage.interface import Capability


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """(max_len, d_model) fixed positions (Vaswani et al. 2017, §3.5): sin even dims, cos odd."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]  # (L, 1)
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(1e4) / d_model))
    table = torch.zeros(max_len, d_model)  # (L, D)
    table[:, 0::2] = torch.sin(position * freq)  # (L, D/2)
    table[:, 1::2] = torch.cos(position * freq[: d_model // 2])  # (L, D/2)
    return table


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention over the past (and a key/value cache of earlier tokens)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(
                f"model.net.d_model={d_model} is not a multiple of model.net.n_heads={n_heads}"
            )
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, past: tuple | None = None):
        """``x`` (B, T, D); ``past`` (keys, values), each (B, heads, P, D/heads), or None.

        Returns the attention output (B, T, D) and the keys and values of the past and these T
        tokens, each (B, heads, P+T, D/heads).
        """
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)  # 3 × (B, T, D)
        q, k, v = (  # 3 × (B, h, T, D/h)
            z.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2) for z in (q, k, v)
        )
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, h, P+T, D/h)
            v = torch.cat([past[1], v], dim=2)  # (B, h, P+T, D/h)
        P = k.shape[2] - T
        drop = self.dropout if self.training else 0.0
        if P == 0:
            y = F.scaled_dot_product_attention(  # (B, h, T, D/h)
                q, k, v, dropout_p=drop, is_causal=True
            )
        else:
            # is_causal aligns the mask top-left; with a cache, query i sits at position P + i
            mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device)  # (T, P+T)
            mask = mask.tril(diagonal=P)  # (T, P+T): query i sees keys 0..P+i
            y = F.scaled_dot_product_attention(  # (B, h, T, D/h)
                q, k, v, attn_mask=mask, dropout_p=drop
            )
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.resid_drop(self.proj(y)), (k, v)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, past: tuple | None = None):
        a, kv = self.attn(self.ln1(x), past)  # (B, T, D)
        x = x + a  # (B, T, D)
        x = x + self.mlp(self.ln2(x))  # (B, T, D)
        return x, kv


class TransformerLM(nn.Module):
    """Decoder-only transformer LM.

    Args:
        vocab_size: V, from the corpus vocabulary.
        d_model: width of the residual stream.
        n_layers: transformer blocks.
        n_heads: attention heads per block (``d_model`` must be a multiple).
        d_ff: MLP width (default ``4 * d_model``).
        max_len: context length: positions the model can see (use the batching ``seq_len``).
        dropout: on embeddings, attention weights, and each residual branch.
        positions: ``"learned"`` (GPT) or ``"sinusoidal"`` (Vaswani et al. 2017).
        tie_weights: share the output layer with the token embedding.
    """

    family = "transformer"
    year = 2017
    era = "2017–"
    citation = "Vaswani et al. 2017; Radford et al. 2018"
    capabilities = frozenset({Capability.LOG_PROB, Capability.FEATURES, Capability.GENERATE})

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        n_layers: int = 4,
        n_heads: int = 4,
        d_ff: int | None = None,
        max_len: int = 128,
        dropout: float = 0.1,
        positions: str = "learned",
        tie_weights: bool = True,
    ):
        super().__init__()
        if positions not in ("learned", "sinusoidal"):
            raise ValueError(
                f"model.net.positions must be 'learned' or 'sinusoidal', got {positions!r}"
            )
        self.max_len = max_len
        self.d_model = d_model
        self.n_layers = n_layers
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        if positions == "learned":
            self.pos_emb = nn.Embedding(max_len, d_model)
        else:
            self.pos_emb = None
            self.register_buffer("pos_table", sinusoidal_positions(max_len, d_model), False)
        self.drop = nn.Dropout(dropout)
        d_ff = d_ff or 4 * d_model
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_weights:
            self.head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            # GPT-2: scale residual projections so the stream's variance does not grow with depth
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ----- cost and optimisation --------------------------------------------------------------
    def n_params(self) -> int:
        """Trainable numbers (a tied output layer counted once)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, context: int | None = None) -> float:
        """Training FLOPs per token: 6 per matmul weight (forward 2, backward 4) plus attention.

        Matmul weights are every Linear weight, the output layer included (the embedding lookup is
        not a matmul); attention adds ``12 · n_layers · d_model · context`` (scores and weighted
        sum, forward and backward, over the full ``context``: the PaLM / nanoGPT convention).
        """
        context = context or self.max_len
        matmul = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        return 6.0 * matmul + 12.0 * self.n_layers * self.d_model * context

    def optim_groups(self) -> list[dict]:
        """AdamW groups: weight decay on matrices (embedding included), none on norms and biases."""
        params = {id(p): p for p in self.parameters()}.values()  # a tied weight once
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def get_input_embeddings(self) -> nn.Embedding:
        return self.tok_emb

    def set_input_embeddings(self, embedding: nn.Embedding) -> None:
        self.tok_emb = embedding

    # ----- the network --------------------------------------------------------------------------
    def _encode(self, tokens: torch.Tensor, cache: dict | None = None):
        """Final-LN states of ``tokens`` (B, T) after the cached ones (cache + T <= max_len)."""
        offset = 0 if cache is None else cache["tokens"].shape[1]
        T = tokens.shape[1]
        pos = torch.arange(offset, offset + T, device=tokens.device)  # (T,)
        pos_vec = self.pos_emb(pos) if self.pos_emb is not None else self.pos_table[pos]  # (T, D)
        x = self.drop(self.tok_emb(tokens) + pos_vec)  # (B, T, D)
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            past = None if cache is None else (cache["keys"][i], cache["values"][i])
            x, (k, v) = block(x, past)  # (B, T, D); k, v (B, h, offset+T, D/h)
            keys.append(k)
            values.append(v)
        seen = tokens if cache is None else torch.cat([cache["tokens"], tokens], dim=1)
        return self.ln_f(x), {"tokens": seen, "keys": keys, "values": values}

    def _sliding(self, tokens: torch.Tensor, start: int):
        """States of positions ``start..`` of a (B, T) input longer than ``max_len``, each from a
        window of the last ``max_len`` tokens; the cache of the last window."""
        B, T = tokens.shape
        M = self.max_len
        parts = []
        if start < M:  # positions before M see the whole prefix: one window
            h, _ = self._encode(tokens[:, :M])  # (B, M, D)
            parts.append(h[:, start:])
        first = max(start, M)
        # the window ending at position p starts at p - M + 1: unfold index p - M + 1
        windows = tokens.unfold(1, M, 1)[:, first - M + 1 :]  # (B, n, M)
        n = windows.shape[1]
        h, cache = self._encode(windows.reshape(B * n, M))  # (B*n, M, D)
        parts.append(h[:, -1].view(B, n, -1))  # (B, n, D): the last position of each window
        last = {
            "tokens": tokens[:, -M:],
            "keys": [k.view(B, n, *k.shape[1:])[:, -1] for k in cache["keys"]],
            "values": [v.view(B, n, *v.shape[1:])[:, -1] for v in cache["values"]],
        }
        return torch.cat(parts, dim=1), last  # (B, T - start, D)

    def hidden(self, tokens: torch.Tensor, state: dict | None = None):
        """Final-LayerNorm states (B, T, D) of ``tokens`` (B, T) after the cached ``state``."""
        if state is not None:
            if state["tokens"].shape[1] + tokens.shape[1] <= self.max_len:
                return self._encode(tokens, state)
            # the window moves: re-encode the cached tokens and these (see the module docstring)
            start = state["tokens"].shape[1]
            tokens = torch.cat([state["tokens"], tokens], dim=1)  # (B, P+T)
        else:
            start = 0
        if tokens.shape[1] <= self.max_len:
            h, cache = self._encode(tokens)  # (B, T, D)
            return h[:, start:], cache
        return self._sliding(tokens, start)

    def forward(self, tokens: torch.Tensor, state: dict | None = None):
        """Next-token logits (B, T, V) at every position of ``tokens`` (B, T); the new cache."""
        h, state = self.hidden(tokens, state)  # (B, T, D)
        return self.head(h), state  # (B, T, V)
