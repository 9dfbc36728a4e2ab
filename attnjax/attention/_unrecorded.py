"""A base for variants whose weights are not the contract's recorded [B, H, Lq, Lk] distribution
(signed differential weights; per-block weights of block_local) but which still want the shared
bias / soft-capping / dropout of `AttentionBase.attention_weights`, which always records.

Such a variant declares `attention_weights=False`, and so must record nothing: this base drops
exactly that one recording. (A `record=False` argument of `attention_weights` would make it
unnecessary.)
"""

from __future__ import annotations

from attnjax.attention.base import AttentionBase


class UnrecordedAttention(AttentionBase):
    """AttentionBase whose `attention_weights(...)` applies everything but does not sow."""

    def sow(self, col, name, value, *args, **kwargs):
        if col == "intermediates" and name == "attention_weights":
            return False  # not the contract's weights; see the module docstring
        return super().sow(col, name, value, *args, **kwargs)
