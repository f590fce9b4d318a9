"""Serving a split's id stream as :class:`~lineage.interface.TokenBatch` objects (pure torch).

Three modes, one per :attr:`Batching.mode <lineage.interface.Batching>`:

* :func:`full_batches` — the whole split as one (1, N+1) batch (count and rule models).
* :func:`stream_batches` — Zaremba et al. (2014) / PyTorch ``word_language_model`` batching: the
  stream is trimmed to a multiple of ``batch_size`` and cut into ``batch_size`` rows of contiguous
  text; consecutive batches continue each row (``carry=True``). With ``batch_size`` 1 every target
  of the split is scored exactly once with its full history. With ``batch_size`` > 1 the trimmed
  tail (fewer than ``batch_size`` tokens) and the first token of rows 1.. are context only, never
  scored: evaluation therefore uses ``eval_batch_size`` (default 1).
* :func:`shard_stream_batches` — stream batches under data parallelism (DDP): training gives
  each rank its own contiguous rows of every batch (the batch size is the global one, so one
  process and W processes take the same optimisation steps); evaluation is one carried state
  through the split, so rank 0 scores every batch and the other ranks get one batch with no
  target (each target is scored by exactly one rank, with its full history).
* :func:`window_batches` — fixed-length windows of ``seq_len`` targets. Training: non-overlapping
  windows (each target once, one token of overlap as context). Evaluation: sliding windows with
  stride ``seq_len - min_context``; the first window scores all its targets, each later one scores
  only the targets after the ``min_context + 1`` tokens it repeats, so every target is scored
  exactly once with at least ``min(min_context + 1, position)`` tokens of history. Rows of a batch
  are padded to equal length with ``target_mask`` False (pad id 0). Under data parallelism
  :func:`shard_windows` gives each rank its own evaluation windows (no window twice, none left
  out) and :class:`RankSampler` each rank its own training batches.

Batches are plain objects: DataLoaders use ``batch_size=None`` and :func:`passthrough` as collate.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lineage.data.sources import DataError
from lineage.interface import TokenBatch

PAD_ID = 0  # any valid id; padded positions are never targets

Window = tuple[int, int, int]  # (start, end exclusive, first scored column)


def passthrough(batch: TokenBatch) -> TokenBatch:
    """DataLoader ``collate_fn`` that returns the pre-built batch unchanged."""
    return batch


def _as_long(ids: np.ndarray | torch.Tensor | Sequence[int]) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids)
    if t.ndim != 1:
        raise ValueError(f"expected a 1-D id stream, got shape {tuple(t.shape)}")
    return t.to(torch.long)


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if int(v) < 1:
            raise DataError(f"model.batching: {name} must be >= 1, got {v}")


def full_batches(ids: np.ndarray | torch.Tensor, split: str) -> list[TokenBatch]:
    """The whole split as one batch of shape (1, N+1); every column but 0 is a target."""
    tokens = _as_long(ids).view(1, -1)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    return [TokenBatch(tokens, mask, carry=False, split=split, meta={"mode": "full"})]


def stream_batches(
    ids: np.ndarray | torch.Tensor, batch_size: int, seq_len: int, split: str
) -> list[TokenBatch]:
    """Contiguous rows, ``seq_len`` targets per row per batch, state carried between batches.

    Batch ``i`` holds columns ``[i*seq_len, (i+1)*seq_len + 1)`` of the (batch_size, L) matrix:
    column 0 is context only (the previous batch's last target); the last batch may be shorter.

    Raises:
        DataError: the split is too short for ``batch_size`` rows of two tokens.
    """
    _check_positive(batch_size=batch_size, seq_len=seq_len)
    stream = _as_long(ids)
    length = len(stream) // batch_size
    if length < 2:
        raise DataError(
            f"the {split} split has {len(stream)} tokens, too few for {batch_size} rows; "
            "lower model.batching.batch_size (eval_batch_size when it is not train)"
        )
    data = stream[: length * batch_size].view(batch_size, length)
    batches = []
    for i, start in enumerate(range(0, length - 1, seq_len)):
        # contiguous: models may .view() the batch (a no-op copy-wise for one row)
        tokens = data[:, start : min(start + seq_len + 1, length)].contiguous()
        mask = torch.ones(tokens.shape, dtype=torch.bool)
        mask[:, 0] = False
        meta = {"mode": "stream", "index": i, "start": start}
        batches.append(TokenBatch(tokens, mask, carry=i > 0, split=split, meta=meta))
    return batches


def shard_stream_batches(
    batches: Sequence[TokenBatch], rank: int, world_size: int, split: str, train: bool
) -> list[TokenBatch]:
    """This rank's share of :func:`stream_batches` under data parallelism.

    Args:
        batches: every rank's batches, in order.
        rank: this process's global rank, ``0 <= rank < world_size``.
        world_size: number of processes.
        split: ``train``, ``val`` or ``test``.
        train: training (split rows) or evaluation (rank 0 scores everything).

    Raises:
        DataError: training rows that do not divide evenly among the ranks.
    """
    if world_size == 1:
        return list(batches)
    if train:
        rows = batches[0].tokens.shape[0]
        if rows % world_size:
            raise DataError(
                f"batching: batch_size={rows} must be a multiple of the number of processes "
                f"({world_size}) for stream batching under data parallelism"
            )
        per = rows // world_size
        lo, hi = rank * per, (rank + 1) * per
        return [
            TokenBatch(
                b.tokens[lo:hi].contiguous(),
                b.target_mask[lo:hi].contiguous(),
                carry=b.carry,
                split=b.split,
                meta={**b.meta, "rank": rank, "rows": (lo, hi)},
            )
            for b in batches
        ]
    if rank == 0:
        return list(batches)
    return [empty_batch(batches[0].tokens.flatten(), split, rank)]


def empty_batch(ids: np.ndarray | torch.Tensor, split: str, rank: int) -> TokenBatch:
    """A (1, 2) batch with no target, for a rank with nothing to score under data parallelism:
    the rank still runs the evaluation loop and joins the reduction of the sums (a rank with no
    batch would skip the loop's end and leave the others waiting)."""
    tokens = _as_long(ids)[:2].view(1, -1).contiguous()
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    return TokenBatch(tokens, mask, carry=False, split=split, meta={"rank": rank, "empty": True})


def training_windows(n_tokens: int, seq_len: int) -> list[Window]:
    """Non-overlapping windows over a stream of ``n_tokens`` ids (``n_tokens - 1`` targets)."""
    return sliding_windows(n_tokens, seq_len, 0)


def sliding_windows(n_tokens: int, seq_len: int, min_context: int) -> list[Window]:
    """Evaluation windows ``(start, end, first scored column)`` over ``n_tokens`` ids.

    Window ``k`` covers ids ``[k*stride, min(k*stride + seq_len + 1, n_tokens))`` with
    ``stride = seq_len - min_context``; it scores the ids not scored by window ``k - 1``.
    """
    _check_positive(seq_len=seq_len)
    if not 0 <= min_context < seq_len:
        raise DataError(
            f"model.batching: min_context must be in [0, seq_len), got {min_context} with "
            f"seq_len {seq_len}"
        )
    stride = seq_len - min_context
    windows: list[Window] = []
    last = n_tokens - 1  # index of the last target
    scored_to = 0  # highest position already scored
    start = 0
    while scored_to < last:
        end = min(start + seq_len + 1, n_tokens)
        windows.append((start, end, scored_to - start + 1))
        scored_to = end - 1
        start += stride
    return windows


def shard_windows(windows: Sequence[Window], rank: int, world_size: int) -> list[Window]:
    """This rank's contiguous share of the evaluation windows under data parallelism.

    The shares partition the windows in order (sizes differ by at most one, the larger ones
    first; a rank may get none when there are fewer windows than ranks), so the sums added
    across ranks count every target of the split exactly once. Lightning's
    ``DistributedSampler`` would instead pad the batches to a multiple of the number of ranks by
    repeating the first ones, scoring their targets twice.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    per, extra = divmod(len(windows), world_size)  # the first `extra` ranks take one more
    lo = rank * per + min(rank, extra)
    return list(windows[lo : lo + per + (rank < extra)])


def _make_batch(
    stream: torch.Tensor, windows: Sequence[Window], split: str, mode: str
) -> TokenBatch:
    width = max(end - start for start, end, _ in windows)
    tokens = torch.full((len(windows), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.bool)
    for row, (start, end, first) in enumerate(windows):
        tokens[row, : end - start] = stream[start:end]
        mask[row, first : end - start] = True
    meta = {"mode": mode, "starts": [w[0] for w in windows]}
    return TokenBatch(tokens, mask, carry=False, split=split, meta=meta)


class WindowDataset(Dataset):
    """Window batches built on demand (sliding-window evaluation can repeat each token often).

    ``dataset[i]`` is batch ``i`` in order; ``dataset[[j, k, ...]]`` is a batch of those windows
    (what :class:`ShuffledWindowSampler` yields).
    """

    def __init__(
        self,
        ids: np.ndarray | torch.Tensor,
        windows: Sequence[Window],
        batch_size: int,
        split: str,
        mode: str = "window",
    ):
        _check_positive(batch_size=batch_size)
        self.stream = _as_long(ids)
        self.windows = list(windows)
        self.batch_size = int(batch_size)
        self.split = split
        self.mode = mode

    def __len__(self) -> int:
        return math.ceil(len(self.windows) / self.batch_size)

    def __getitem__(self, index: int | Sequence[int]) -> TokenBatch:
        if isinstance(index, int | np.integer):
            if not 0 <= index < len(self):
                raise IndexError(index)
            chosen = self.windows[index * self.batch_size : (index + 1) * self.batch_size]
        else:
            chosen = [self.windows[int(j)] for j in index]
        return _make_batch(self.stream, chosen, self.split, self.mode)


class ShuffledWindowSampler(Sampler):
    """Yields lists of window indices: a fresh permutation each epoch, grouped in batches.

    Lightning calls :meth:`set_epoch` before each epoch; without it the epoch advances on every
    iteration. The order depends only on ``seed`` and the epoch.
    """

    def __init__(self, n_windows: int, batch_size: int, seed: int):
        _check_positive(batch_size=batch_size)
        self.n_windows = int(n_windows)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.n_windows / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        perm = torch.randperm(self.n_windows, generator=g).tolist()
        for i in range(0, self.n_windows, self.batch_size):
            yield perm[i : i + self.batch_size]


class RankSampler(Sampler):
    """Training under data parallelism: rank ``r`` takes items ``r, r + W, ...`` of ``sampler``.

    The items (batch indices or lists of window indices) are padded by repeating the first ones
    up to a multiple of ``world_size``, so that every rank takes the same number of optimiser
    steps (DDP's gradient reduction needs every rank at every step), as Lightning's
    ``DistributedSampler`` does for training. Every rank must draw the same items from
    ``sampler`` (the same seed). ``set_epoch`` is passed on.
    """

    def __init__(self, sampler: Sampler | Sequence, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.sampler = sampler
        self.rank = int(rank)
        self.world_size = int(world_size)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.world_size)

    def __iter__(self) -> Iterator:
        items = list(self.sampler)
        if not items:
            return iter(())
        total = len(self) * self.world_size
        padded = (items * math.ceil(total / len(items)))[:total]
        return iter(padded[self.rank :: self.world_size])


def window_batches(
    ids: np.ndarray | torch.Tensor,
    seq_len: int,
    min_context: int,
    batch_size: int,
    split: str,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    train: bool | None = None,
) -> list[TokenBatch]:
    """Fixed-length window batches (see the module docstring).

    Args:
        ids: the split's id stream (leading ``<eos>`` included).
        seq_len: targets per window.
        min_context: evaluation only: history repeated before the first scored target of each
            later window (beyond the one context column); ``0 <= min_context < seq_len``.
        batch_size: windows per batch.
        split: ``train``, ``val`` or ``test``.
        shuffle: training only: shuffle the windows once (with ``generator``).
        generator: random generator for ``shuffle``.
        train: non-overlapping training windows; default ``split == "train"``.
    """
    train = split == "train" if train is None else train
    n = len(ids)
    windows = training_windows(n, seq_len) if train else sliding_windows(n, seq_len, min_context)
    if train and shuffle:
        perm = torch.randperm(len(windows), generator=generator).tolist()
        windows = [windows[i] for i in perm]
    ds = WindowDataset(ids, windows, batch_size, split)
    return [ds[i] for i in range(len(ds))]
