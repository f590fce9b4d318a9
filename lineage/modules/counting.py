"""CountLM: families fitted by counting (n-grams), driven by the same Lightning Trainer.

No loss and no gradient are faked: ``automatic_optimization`` is off, ``configure_optimizers``
returns ``None`` and ``training_step`` counts. Lightning validates at the end of an epoch *before*
``on_train_epoch_end``, so the engine finalises its statistics lazily, inside the first scoring call
after new counts. Count tables are written into checkpoints by ``on_save_checkpoint``.
"""

from __future__ import annotations

import warnings

import torch

from lineage.interface import Batching, FitMode, TokenBatch
from lineage.modules.base import EngineModule

# Lightning warns once per fit that no optimizer is configured; that is the point of this class.
warnings.filterwarnings(
    "ignore", message=r"`LightningModule.configure_optimizers` returned `None`, this fit will run"
)


class CountLM(EngineModule):
    """A count-based family (``fit_mode = count``): one pass over the train stream.

    Args:
        vocab: the corpus vocabulary (list of types).
        lm: engine constructor (Hydra ``_partial_``), e.g. ``lineage.models.ngram.NgramLM``.
    """

    fit_mode = FitMode.COUNT

    def __init__(self, vocab, lm):
        super().__init__(vocab, lm)
        self.automatic_optimization = False

    def batching(self) -> Batching:
        return Batching(mode="full")

    def trainer_overrides(self) -> dict:
        # One counting pass; Lightning rejects clipping and accumulation under manual
        # optimisation; a sanity check would score an empty model for nothing.
        return {
            **super().trainer_overrides(),
            "max_epochs": 1,
            "gradient_clip_val": None,
            "accumulate_grad_batches": 1,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 1,
        }

    def configure_optimizers(self):
        return None

    def training_step(self, batch: TokenBatch, batch_idx: int) -> None:
        tokens = batch.tokens.cpu().numpy()  # (B, T)
        mask = batch.target_mask.cpu().numpy()  # (B, T)
        counted = 0
        for b in range(tokens.shape[0]):
            targets = mask[b].nonzero()[0]
            if len(targets):
                last = targets[-1] + 1
                counted += self.lm.accumulate(tokens[b, :last], first_target=int(targets[0]))
        self.log(
            "train/tokens_counted", float(counted), on_step=False, on_epoch=True, reduce_fx="sum"
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["counts"] = {k: torch.from_numpy(v) for k, v in self.lm.state_dict().items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.lm.load_state_dict({k: v.numpy() for k, v in checkpoint["counts"].items()})
