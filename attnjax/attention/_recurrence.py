"""Shared machinery of the linear recurrences (retention, gla, deltanet, based). Not a variant.

Chunking: `to_chunks` pads a sequence [B, L, ...] with zeros to a multiple of the chunk C and
reshapes it to [B, n, C, ...]; `from_chunks` undoes it. `scan_sequence` is the recurrent driver:
a `lax.scan` over axis 1 (tokens, or chunks) of batch-major arrays.

Diagonal-decay linear attention, the maths retention and GLA share:
    S_t = diag(exp(g_t)) S_{t-1} + k_tᵀ v_t,    o_t = q_t S_t          (S: [Dk, Dv], g_t <= 0)
with g_t [Dk] (GLA: one decay per key dimension) or [1] (retention: one per head). `strict=True`
reads the state before adding the current token, o_t = q_t diag(exp(g_t)) S_{t-1} (the backward
half of a bidirectional pass). Two forms compute it:
  recurrent: `decay_recurrent`, a scan over tokens (time O(L · Dk · Dv), state Dk · Dv);
  chunked:   `decay_chunked`; with b_r = Σ_{i<=r} g_i the cumulative log-decay inside a chunk,
      o_r = (q_r ⊙ exp(b_r)) S_0 + Σ_{i<=r} [Σ_d q_rd k_id exp(b_rd - b_id)] v_i,
      S_C = diag(exp(b_C)) S_0 + Σ_i (k_i ⊙ exp(b_C - b_i))ᵀ v_i,
  where S_0 is the state entering the chunk (a scan over chunks). Every exponent is a difference
  b_r - b_i with i <= r, so it is <= 0 (log space: no exp(-b) overflow); entries with i > r are
  set to -inf before the exp, so future tokens contribute exact zeros.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MODES = ("chunked", "recurrent")


def compute_dtype(*xs):
    """The arithmetic dtype of the recurrences: float32 for float32/bfloat16 inputs, float64 for
    float64 ones (under jax x64, so forms can be compared to ~1e-12)."""
    return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


def check_settings(name: str, mode: str, chunk_size: int, modes=MODES) -> None:
    if mode not in modes:
        raise ValueError(f"{name} mode {mode!r} not in {modes}")
    if chunk_size < 1:
        raise ValueError(f"{name} chunk_size must be >= 1, got {chunk_size}")


def mask_keys(mask, *xs):
    """Each x [B, L, H, X] with exact zeros at padded keys (mask [B, L], True = real)."""
    if mask is None:
        return xs
    real = mask[:, :, None, None]  # [B, L, 1, 1]
    return tuple(jnp.where(real, x, jnp.zeros((), x.dtype)) for x in xs)


def flip(*xs):
    """Reverse the sequence axis (1) of each x."""
    return tuple(x[:, ::-1] for x in xs)


def to_chunks(x, size: int):
    """[B, L, ...] -> [B, n, C, ...], n = ceil(L / C); the tail is padded with zeros (False)."""
    batch, length = x.shape[:2]
    n = -(-length // size)
    x = jnp.pad(x, [(0, 0), (0, n * size - length)] + [(0, 0)] * (x.ndim - 2))
    return x.reshape(batch, n, size, *x.shape[2:])


def from_chunks(x, length: int):
    """[B, n, C, ...] -> [B, L, ...] (drops the padded tail)."""
    return x.reshape(x.shape[0], -1, *x.shape[3:])[:, :length]


def scan_sequence(step, init, xs):
    """`lax.scan` of step(carry, x_t) -> (carry, y_t) over axis 1 of every array in the pytree
    xs ([B, T, ...]). Returns (final carry, ys stacked on axis 1: [B, T, ...])."""
    carry, ys = jax.lax.scan(step, init, jax.tree.map(lambda x: jnp.moveaxis(x, 1, 0), xs))
    return carry, jax.tree.map(lambda y: jnp.moveaxis(y, 0, 1), ys)


def decay_recurrent(q, k, v, log_decay, strict: bool = False):
    """Token-by-token form. q, k: [B, L, H, Dk]; v: [B, L, H, Dv]; log_decay: [B, L, H, G] with
    G = Dk or 1 (<= 0). Returns ([B, L, H, Dv], the final state S [B, H, Dk, Dv])."""
    batch, _, heads, dk = q.shape
    state = jnp.zeros((batch, heads, dk, v.shape[-1]), compute_dtype(q, v))  # [B, H, Dk, Dv]

    def step(s, x):
        q_t, k_t, v_t, g_t = x  # [B, H, Dk], [B, H, Dk], [B, H, Dv], [B, H, G]
        s = jnp.exp(g_t)[..., None] * s  # decay each key row
        if strict:
            out = jnp.einsum("bhd,bhde->bhe", q_t, s)
        s = s + k_t[..., :, None] * v_t[..., None, :]  # + k_tᵀ v_t
        if not strict:
            out = jnp.einsum("bhd,bhde->bhe", q_t, s)
        return s, out  # out: [B, H, Dv]

    state, out = scan_sequence(step, state, (q, k, v, log_decay))
    return out, state


def decay_chunked(q, k, v, log_decay, chunk_size: int, strict: bool = False):
    """Chunked form of `decay_recurrent` (same arguments), chunks of C = min(chunk_size, L)."""
    batch, length, heads, dk = q.shape
    chunk = min(chunk_size, length)
    qc, kc, vc, gc = (to_chunks(x, chunk) for x in (q, k, v, log_decay))  # [B, n, C, H, X]
    b = jnp.cumsum(gc, axis=2)  # [B, n, C, H, G] log-decay from the chunk start, inclusive

    # Intra-chunk: scores[r, i] = Σ_d q_rd k_id exp(b_rd - b_id) for i <= r (i < r if strict).
    pos = jnp.arange(chunk)
    seen = pos[:, None] > pos[None, :] if strict else pos[:, None] >= pos[None, :]  # [C, C]
    diff = b[:, :, :, None] - b[:, :, None, :]  # [B, n, C(r), C(i), H, G]
    decay = jnp.exp(jnp.where(seen[:, :, None, None], diff, -jnp.inf))  # 0 where not seen
    if gc.shape[-1] == 1:  # one decay per head: a scaled q·k
        scores = jnp.einsum("bnrhd,bnihd->bnrih", qc, kc) * decay[..., 0]  # [B, n, C, C, H]
    else:  # one decay per key dimension
        scores = jnp.einsum("bnrhd,bnihd,bnrihd->bnrih", qc, kc, decay)  # [B, n, C, C, H]
    intra = jnp.einsum("bnrih,bnihe->bnrhe", scores, vc)  # [B, n, C, H, Dv]

    # Inter-chunk: the state entering each chunk, by a scan over chunks.
    b_last = b[:, :, -1]  # [B, n, H, G] log-decay over the whole chunk
    k_to_end = kc * jnp.exp(b_last[:, :, None] - b)  # [B, n, C, H, Dk] decayed to chunk end
    chunk_kv = jnp.einsum("bnihd,bnihe->bnhde", k_to_end, vc)  # [B, n, H, Dk, Dv]
    chunk_decay = jnp.exp(b_last)[..., None]  # [B, n, H, G, 1]

    def step(s, x):  # s: [B, H, Dk, Dv], the state before this chunk
        dec, kv = x
        return dec * s + kv, s

    init = jnp.zeros((batch, heads, dk, v.shape[-1]), compute_dtype(q, v))
    _, s0 = scan_sequence(step, init, (chunk_decay, chunk_kv))  # [B, n, H, Dk, Dv]
    inter = jnp.einsum("bnrhd,bnhde->bnrhe", qc * jnp.exp(b), s0)  # [B, n, C, H, Dv]
    return from_chunks(intra + inter, length)  # [B, L, H, Dv]


def decay_flops(mode: str, length: int, chunk_size: int, dk: int, dv: int, vector: bool) -> float:
    """FLOPs (2 per multiply-add) of `decay_chunked` / `decay_recurrent` for one head.

    recurrent: per token the decay (Dk·Dv multiplies), k_tᵀ v_t and q_t S (2 · Dk·Dv each).
    chunked: per token C intra-chunk scores (Dk multiply-adds each, plus Dk multiplies of the
    decay when `vector`) and their weighted values (C · Dv), plus k_iᵀ v_i into the chunk state
    and q S_0 (Dk·Dv each); per chunk the state decay and add (2 · Dk·Dv).
    """
    if mode == "recurrent":
        return length * 5.0 * dk * dv
    chunk = min(chunk_size, length)
    n = -(-length // chunk)
    scores = length * chunk * dk * (3.0 if vector else 2.0)
    return scores + 2.0 * length * chunk * dv + 4.0 * length * dk * dv + 2.0 * n * dk * dv
