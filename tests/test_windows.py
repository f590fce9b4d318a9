"""Batching properties: every target is scored exactly once, with the promised history."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lineage.data.sources import DataError
from lineage.data.windows import (
    ShuffledWindowSampler,
    WindowDataset,
    full_batches,
    passthrough,
    sliding_windows,
    stream_batches,
    training_windows,
    window_batches,
)


def _stream(n_tokens: int, seed: int = 0) -> np.ndarray:
    ids = np.random.default_rng(seed).integers(2, 50, size=n_tokens).astype(np.int32)
    ids[0] = 1  # the leading <eos>
    return ids


def _scored_positions(batches, stream: np.ndarray, starts_of) -> list[int]:
    """Stream positions of all targets; checks each scored token equals the stream's."""
    positions = []
    for b in batches:
        assert b.tokens.dtype == torch.long and b.target_mask.dtype == torch.bool
        assert b.tokens.shape == b.target_mask.shape
        assert not b.target_mask[:, 0].any(), "column 0 is never a target"
        for row, col in b.target_mask.nonzero().tolist():
            pos = starts_of(b, row) + col
            assert int(b.tokens[row, col]) == int(stream[pos])
            positions.append(pos)
    return positions


def test_full_batch_is_the_whole_split():
    ids = _stream(101)
    (batch,) = full_batches(ids, "val")
    assert batch.tokens.shape == (1, 101)
    assert batch.n_targets == 100 and batch.split == "val" and not batch.carry
    assert torch.equal(batch.tokens[0], torch.as_tensor(ids, dtype=torch.long))
    assert passthrough(batch) is batch


@pytest.mark.parametrize("n_tokens,seq_len", [(2, 1), (10, 3), (101, 7), (100, 35), (36, 35)])
def test_stream_batch_size_one_scores_every_target_once(n_tokens, seq_len):
    ids = _stream(n_tokens)
    batches = stream_batches(ids, 1, seq_len, "test")
    pos = _scored_positions(batches, ids, lambda b, row: b.meta["start"])
    assert pos == list(range(1, n_tokens)), "in order, each once"
    assert [b.carry for b in batches] == [False] + [True] * (len(batches) - 1)
    assert all(b.tokens.shape[1] <= seq_len + 1 for b in batches)
    for prev, cur in zip(batches, batches[1:], strict=False):
        # The context column is the previous batch's last target: the stream continues.
        assert torch.equal(cur.tokens[:, 0], prev.tokens[:, -1])


@pytest.mark.parametrize("n_tokens,batch_size,seq_len", [(103, 4, 5), (1000, 20, 35), (50, 7, 3)])
def test_stream_rows_are_contiguous_text(n_tokens, batch_size, seq_len):
    ids = _stream(n_tokens, seed=1)
    length = n_tokens // batch_size
    batches = stream_batches(ids, batch_size, seq_len, "train")
    assert all(b.tokens.shape[0] == batch_size and b.tokens.is_contiguous() for b in batches)
    pos = _scored_positions(batches, ids, lambda b, row: row * length + b.meta["start"])
    # Each row scores its columns 1..L-1 once; the trimmed tail and row starts are context only.
    assert len(pos) == len(set(pos)) == batch_size * (length - 1)
    assert max(pos) < batch_size * length
    for prev, cur in zip(batches, batches[1:], strict=False):
        assert torch.equal(cur.tokens[:, 0], prev.tokens[:, -1])


def test_stream_too_short_is_a_data_error():
    with pytest.raises(DataError, match="too few"):
        stream_batches(_stream(5), 4, 3, "val")
    with pytest.raises(DataError, match="seq_len"):
        stream_batches(_stream(50), 1, 0, "val")


CASES = [
    # (n_tokens, seq_len, min_context, batch_size)
    (2, 1, 0, 1),
    (10, 4, 0, 3),
    (10, 4, 3, 2),
    (101, 8, 4, 3),
    (100, 16, 15, 5),
    (257, 32, 0, 4),
    (257, 32, 24, 1),
    (33, 32, 8, 2),
    (34, 32, 8, 2),
]


@pytest.mark.parametrize("n_tokens,seq_len,min_context,batch_size", CASES)
def test_sliding_windows_score_every_target_once_with_history(
    n_tokens, seq_len, min_context, batch_size
):
    ids = _stream(n_tokens, seed=n_tokens)
    batches = window_batches(ids, seq_len, min_context, batch_size, "val")
    assert all(b.tokens.shape[0] <= batch_size for b in batches)
    assert all(b.tokens.shape[1] <= seq_len + 1 for b in batches)
    pos = _scored_positions(batches, ids, lambda b, row: b.meta["starts"][row])
    assert sorted(pos) == list(range(1, n_tokens)), "every target exactly once"
    for b in batches:
        for row, col in b.target_mask.nonzero().tolist():
            position = b.meta["starts"][row] + col
            # History inside the window is `col` tokens; at least min_context (or all there is).
            assert col >= min(min_context + 1, position)
    windows = sliding_windows(n_tokens, seq_len, min_context)
    starts = [w[0] for w in windows]
    assert all(b - a == seq_len - min_context for a, b in zip(starts, starts[1:], strict=False))


@pytest.mark.parametrize("n_tokens,seq_len,min_context,batch_size", CASES)
def test_training_windows_are_disjoint_and_cover_the_split(
    n_tokens, seq_len, min_context, batch_size
):
    ids = _stream(n_tokens, seed=3)
    g = torch.Generator().manual_seed(0)
    batches = window_batches(
        ids, seq_len, min_context, batch_size, "train", shuffle=True, generator=g
    )
    pos = _scored_positions(batches, ids, lambda b, row: b.meta["starts"][row])
    assert sorted(pos) == list(range(1, n_tokens))
    # Every full training window has seq_len targets.
    for b in batches:
        for row in range(b.tokens.shape[0]):
            start = b.meta["starts"][row]
            assert int(b.target_mask[row].sum()) == min(seq_len, n_tokens - 1 - start)


def test_window_padding_is_never_a_target():
    ids = _stream(12)
    (b,) = window_batches(ids, 5, 0, 3, "val")
    # windows start at 0, 5, 10: the last is 2 tokens long, padded to the batch width
    assert b.meta["starts"] == [0, 5, 10]
    assert b.tokens.shape == (3, 6)
    assert b.target_mask[2].tolist() == [False, True, False, False, False, False]


def test_window_settings_are_checked():
    with pytest.raises(DataError, match="min_context"):
        sliding_windows(100, 8, 8)
    with pytest.raises(DataError, match="seq_len"):
        training_windows(100, 0)


def test_shuffled_sampler_reshuffles_each_epoch_deterministically():
    ids = _stream(200)
    windows = training_windows(len(ids), 10)
    ds = WindowDataset(ids, windows, 4, "train")
    sampler = ShuffledWindowSampler(len(windows), 4, seed=7)
    assert len(sampler) == len(ds) == 5
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == epoch0, "same seed and epoch, same order"
    assert epoch0 != epoch1
    for order in (epoch0, epoch1):
        assert sorted(i for batch in order for i in batch) == list(range(len(windows)))
        pos = _scored_positions([ds[b] for b in order], ids, lambda b, r: b.meta["starts"][r])
        assert sorted(pos) == list(range(1, len(ids)))
