"""Shared by the variants whose parameters are sized by the sequence length (linformer,
synthesizer_dense, synthesizer_random): they need the model's `max_length`."""

from __future__ import annotations


def require_max_length(module) -> int:
    """module.max_length, or a clear error when it was not set (0)."""
    if module.max_length < 1:
        raise ValueError(
            f"attention {type(module).__name__!r} has parameters sized by the sequence length, "
            f"so it needs max_length (the model's maximum sequence length); got "
            f"max_length={module.max_length}"
        )
    return module.max_length
