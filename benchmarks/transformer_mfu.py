"""Achieved training FLOP/s of the transformer family as a fraction of this machine's matmul peak.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/transformer_mfu.py --threads 1
    python benchmarks/transformer_mfu.py --threads 2 --model transformer_small

Two measurements in the same process, with the same thread count:

1. **Peak**: the best float32 matmul rate over a few square sizes (``2 n^3`` FLOPs per product),
   the ceiling any training step could reach on this CPU.
2. **Achieved**: full training steps (forward, cross-entropy over V, backward, gradient clipping,
   AdamW) of the net in ``conf/model/<model>.yaml`` (Vaswani et al. 2017; Radford et al. 2018
   architecture, ``lineage.models.transformer``) on random token windows of the config's
   ``batch_size × seq_len``; FLOPs per token are ``TransformerLM.flops_per_token()``: 6 per matmul
   weight (the output layer included, the embedding lookup not) plus ``12 · layers · d · context``
   for attention. Random tokens cost the same as text.

MFU = achieved / peak. The run prints parameters, FLOPs per token, tokens/s, both rates and MFU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from lineage.models.transformer import TransformerLM

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def matmul_peak(sizes=(512, 1024, 2048), seconds: float = 1.0) -> float:
    """Best float32 FLOP/s of ``a @ b`` over square sizes, each timed for about ``seconds``."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)  # (n, n)
        a @ b  # warm-up
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            a @ b
            count += 1
        best = max(best, 2 * n**3 * count / elapsed)
    return best


def build_net(model: str, vocab_size: int) -> tuple[TransformerLM, int, int, float]:
    """The net of a model config with its batch size, window length and learning rate."""
    cfg = OmegaConf.load(CONF / f"{model}.yaml")
    batching = cfg.batching
    net_kwargs = {k: v for k, v in cfg.net.items() if not k.startswith("_") and k != "max_len"}
    net = TransformerLM(vocab_size, max_len=batching.seq_len, **net_kwargs)
    return net, int(batching.batch_size), int(batching.seq_len), float(cfg.optimizer.lr)


def training_rate(net: TransformerLM, batch: int, seq_len: int, lr: float, steps: int) -> float:
    """Training tokens per second over ``steps`` timed steps (after two warm-up steps)."""
    vocab_size = net.tok_emb.num_embeddings
    optimizer = torch.optim.AdamW(net.optim_groups(), lr=lr, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    net.train()
    start = 0.0
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        tokens = torch.randint(0, vocab_size, (batch, seq_len + 1), generator=g)  # (B, T+1)
        logits, _ = net(tokens[:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, vocab_size), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
    return steps * batch * seq_len / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="transformer_small", help="a conf/model/ config")
    parser.add_argument("--vocab-size", type=int, default=10_000, help="PTB: 10,000")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net, batch, seq_len, lr = build_net(args.model, args.vocab_size)
    flops_per_token = net.flops_per_token(seq_len)
    print(f"model {args.model}: {net.n_params():,} parameters, batch {batch} × {seq_len} tokens")
    print(f"training FLOPs per token: {flops_per_token / 1e6:.1f} M (6·N_matmul + attention)")
    print(f"threads: {torch.get_num_threads()}")

    peak = matmul_peak()
    print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    tokens_per_sec = training_rate(net, batch, seq_len, lr, args.steps)
    achieved = tokens_per_sec * flops_per_token
    print(f"training: {tokens_per_sec:,.0f} tokens/s = {achieved / 1e9:.1f} GFLOP/s")
    print(f"MFU: {achieved / peak:.1%} of the measured float32 matmul peak")


if __name__ == "__main__":
    main()
