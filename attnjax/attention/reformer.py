"""Reformer LSH attention: queries attend only to keys hashed into the same bucket.

Paper: Kitaev, Kaiser & Levskaya 2020, "Reformer: The Efficient Transformer" (arXiv:2001.04451).
Idea: angular LSH h(x) = argmax([xR; -xR]) with a random rotation R [d, n_buckets / 2] puts
similar vectors in the same bucket. Positions are sorted by (bucket, position) and the sorted
sequence is cut into chunks of C; a query attends to the keys of its own chunk and of the chunk
before it that share its bucket (the paper's chunk neighbourhood P~_i, masked to the bucket
P_i). Shared-QK (`shared_qk=True`, the paper's setting): the `k` argument is ignored and the
keys are the length-normalised queries, k_j = q_j / ||q_j||, so logits are
q_i·q_j / (||q_j|| √d); a query never attends to itself (its own key would dominate) unless it
sees no other key, and then it returns its own value.
`shared_qk=False` hashes q and k with the same rotations and sorts queries and keys separately
(query chunk c sees key chunks c - 1 and c); there is no self rule.
Multi-round (`num_hashes` = n_r > 1, independent rotations): each round r gives an output o_r and
a log-normaliser z_r over its set P_i^(r), with each logit lowered by log N_ij (N_ij = number of
rounds in which j is in P_i, the paper's correction for duplicates), and the rounds are combined
with weights exp(z_r - logsumexp_r z_r). The result is exactly softmax attention over the union
of the rounds' sets.
Rotations are fixed by `seed` (NumPy's default_rng(seed) normals [n_r, d, n_buckets / 2]),
shared by all heads; they are not trained or resampled.

Implementation notes and deviations (all exact, nothing approximated):
  * Self-exclusion is exact (the paper lowers the self logit by 1e5 instead): a query sees its
    own key only when no round shows it any other key.
  * Causal mode masks keys j > i by original position. The paper's chunking is not causal: a
    token's sorted position counts later tokens in lower buckets, so where chunk boundaries fall
    (hence which past keys a query sees) depends on the future. Causal mode therefore cuts
    chunks within each bucket (chunk boundaries at multiples of C of the rank inside the
    bucket), which depends on the past only; the bucket-sorted layout then holds up to
    n_buckets + 1 partly empty extra chunks (twice the chunks without shared-QK).
  * Padded positions (mask False) are sorted into an extra last bucket, so they cannot move
    real tokens' chunks; they are never attended and their own outputs are 0.
  * There is no wrap-around: the first chunk has no previous chunk.
Complexity per head (L tokens, C = chunk_size, n_r rounds, b = n_buckets): time
O(n_r · L · (C · d + b · d)), memory O(n_r · L · C) for the chunked logits plus O(n_r² · L · C)
for the duplicate counts; no L x L matrix is formed. Decoding needs every past key (state grows).
Cross attention is not supported: buckets and chunks need queries and keys on one axis.
"""

from __future__ import annotations

import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.attention.base import AttentionBase, Capabilities, repeat_kv


def random_rotations(seed: int, num_hashes: int, head_dim: int, num_buckets: int):
    """The fixed LSH rotations [num_hashes, head_dim, num_buckets // 2], float32 N(0, 1) from
    NumPy's generator for `seed` (a constant of the compiled program: nothing is drawn on the
    device, and the values do not depend on the JAX version)."""
    shape = (num_hashes, head_dim, max(num_buckets // 2, 1))
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def lsh_buckets(x, rotations, num_buckets: int):
    """Angular LSH: x [B, L, H, D] -> bucket ids [B, H, R, L] (int32) in [0, num_buckets)."""
    batch, length, heads, _ = x.shape
    if num_buckets == 1:
        return jnp.zeros((batch, heads, rotations.shape[0], length), jnp.int32)
    proj = jnp.einsum("blhd,rdn->bhrln", x.astype(jnp.float32), rotations)  # [B, H, R, L, b/2]
    return jnp.argmax(jnp.concatenate([proj, -proj], axis=-1), axis=-1).astype(jnp.int32)


def _rank_and_count(buckets, num_buckets: int):
    """buckets [..., L] -> (rank of each position among the earlier ones of its bucket [..., L],
    bucket sizes [..., num_buckets])."""
    onehot = (buckets[..., None] == jnp.arange(num_buckets)).astype(jnp.int32)  # [..., L, NB]
    upto = jnp.cumsum(onehot, axis=-2)  # [..., L, NB] positions <= l in each bucket
    rank = jnp.take_along_axis(upto, buckets[..., None], axis=-1)[..., 0] - 1  # [..., L]
    return rank, upto[..., -1, :]


def _slots(bq, bk, num_buckets: int, chunk: int, per_bucket: bool):
    """Positions in the bucket-sorted layout of queries and keys, [..., L] each.

    Global (paper): slot = number of positions with a smaller (bucket, position). Per bucket
    (causal): each bucket starts a new chunk and holds a whole number of chunks, as many as its
    query or key count needs, so slot // C - (first chunk of the bucket) = rank // C."""
    rank_q, count_q = _rank_and_count(bq, num_buckets)  # [..., L], [..., NB]
    rank_k, count_k = (rank_q, count_q) if bk is bq else _rank_and_count(bk, num_buckets)
    if per_bucket:
        size_q = size_k = chunk * -(-jnp.maximum(count_q, count_k) // chunk)  # [..., NB]
    else:
        size_q, size_k = count_q, count_k

    def slot(buckets, rank, size):
        start = jnp.cumsum(size, axis=-1) - size  # [..., NB] first slot of each bucket
        return jnp.take_along_axis(start, buckets, axis=-1) + rank  # [..., L]

    return slot(bq, rank_q, size_q), slot(bk, rank_k, size_k)


def _tokens_at(slots, num_slots: int):
    """Inverse of the layout: slots [..., L] -> the position in each slot [..., num_slots];
    empty slots hold L (the index of a padding row appended to every gathered array)."""
    length = slots.shape[-1]

    def one(s):  # [L] -> [num_slots]
        return jnp.full((num_slots,), length, jnp.int32).at[s].set(jnp.arange(length))

    return jax.vmap(one)(slots.reshape(-1, length)).reshape(*slots.shape[:-1], num_slots)


def _gather(x, tokens):
    """Per position x [B, L, H, X] at tokens [B, H, R, M] (index L: a row of zeros)
    -> [B, H, R, M, X]."""
    x = jnp.pad(jnp.transpose(x, (0, 2, 1, 3)), [(0, 0), (0, 0), (0, 1), (0, 0)])  # [B,H,L+1,X]
    return jnp.take_along_axis(x[:, :, None], tokens[..., None], axis=3)


@functools.partial(jax.jit, static_argnames=(
    "causal", "num_buckets", "num_hashes", "chunk_size", "shared_qk", "seed"))
def lsh_attention(q, k, v, real, *, causal, num_buckets, num_hashes, chunk_size, shared_qk,
                  seed):
    """The Reformer's attention (see the module docstring): q [B, L, H, D], k/v [B, L, KV, D],
    real [B, L] (True = a real key) -> float32 [B, L, H, E]. Jitted as one unit, so that eager
    calls compile once."""
    batch, length, heads, dim = q.shape
    rounds, chunk = num_hashes, min(chunk_size, length)
    q32 = q.astype(jnp.float32)  # [B, L, H, D]
    if shared_qk:
        norm = jnp.sqrt(jnp.maximum(jnp.sum(q32 * q32, axis=-1, keepdims=True), 1e-12))
        k32 = q32 / norm  # [B, L, H, D] unit keys
    else:
        k32 = repeat_kv(k.astype(jnp.float32), heads)  # [B, L, H, D]
    v32 = repeat_kv(v.astype(jnp.float32), heads)  # [B, L, H, E]

    # buckets; padded positions go to an extra last bucket, `num_buckets`
    rot = random_rotations(seed, rounds, dim, num_buckets)  # [R, D, b/2]
    hidden = ~real[:, None, None, :]  # [B, 1, 1, L]
    bq = jnp.where(hidden, num_buckets, lsh_buckets(q32, rot, num_buckets))  # [B, H, R, L]
    bk = bq if shared_qk else jnp.where(hidden, num_buckets, lsh_buckets(k32, rot, num_buckets))

    # layout: slots of the bucket-sorted queries / keys, cut into n chunks of C
    total = length * (1 if shared_qk else 2) + (num_buckets + 1) * (chunk - 1) if causal else length
    n = -(-total // chunk)
    slot_q, slot_k = _slots(bq, bk, num_buckets + 1, chunk, per_bucket=causal)  # [B, H, R, L]
    q_tok = _tokens_at(slot_q, n * chunk)  # [B, H, R, n·C], empty slots hold L
    k_tok = _tokens_at(slot_k, n * chunk).reshape(batch, heads, rounds, n, chunk)
    prev = jnp.pad(k_tok[:, :, :, :-1], [(0, 0)] * 3 + [(1, 0), (0, 0)],
                   constant_values=length)  # [B, H, R, n, C] the chunk before (none for 0)
    k_tok = jnp.concatenate([prev, k_tok], axis=-1).reshape(batch, heads, rounds, -1)

    # Key j is in query i's set of round r iff both are real, share the bucket and j's chunk is
    # i's or the one before: with code = bucket · (n + 2) + chunk, iff code_i - code_j in {0, 1}.
    # Codes of hidden queries / keys (-10 / -5) match nothing; empty key slots are dropped below.
    def codes(buckets, slots, pad):  # -> [B, L, H, R'] float32 (exact small integers)
        c = jnp.where(real[:, None, None, :], buckets * (n + 2) + slots // chunk, pad)
        return jnp.transpose(c, (0, 3, 1, 2)).astype(jnp.float32)

    def gather(x, tokens):  # [B, L, H, X] at tokens -> [B, H, R, n, M / n, X]
        return _gather(x, tokens).reshape(batch, heads, rounds, n, -1, x.shape[-1])

    qc = gather(jnp.concatenate([q32, codes(bq, slot_q, -10)], -1), q_tok)  # [B,H,R,n,C,D+R']
    kc = gather(jnp.concatenate([k32, v32, codes(bk, slot_k, -5)], -1), k_tok)  # [.., 2C, ..]
    qc, code_q = jnp.split(qc, [dim], axis=-1)  # [B, H, R, n, C, D], [.., R']
    kc, vc, code_k = jnp.split(kc, [dim, dim + v32.shape[-1]], axis=-1)  # [B, H, R, n, 2C, ..]
    logits = jnp.einsum("bhrncd,bhrnkd->bhrnck", qc, kc) / math.sqrt(dim)  # [B, H, R, n, C, 2C]

    step = code_q[..., :, None, :] - code_k[..., None, :, :]  # [B, H, R, n, C, 2C, R']
    member = (step == 0) | (step == 1)  # j in i's set of round r'
    this_round = jnp.arange(rounds)[:, None, None, None, None] == jnp.arange(rounds)
    qpos = q_tok.reshape(batch, heads, rounds, n, chunk)[..., :, None]  # [B, H, R, n, C, 1]
    kpos = k_tok.reshape(batch, heads, rounds, n, 2 * chunk)[..., None, :]  # [.., 1, 2C]
    visible = jnp.any(member & this_round, axis=-1) & (kpos < length)  # [B, H, R, n, C, 2C]
    if causal:
        visible = visible & (kpos <= qpos)
    if shared_qk:
        visible = visible & (kpos != qpos)  # the self rule; see the fallback below
    if rounds > 1:  # lower each logit by log N_ij, N_ij = rounds whose set holds j (>= 1 here)
        count = jnp.sum(member, axis=-1)  # [B, H, R, n, C, 2C]
        logits = logits - jnp.log(jnp.maximum(count, 1).astype(jnp.float32))

    # softmax within each round; hidden keys get exactly 0
    big_neg = jnp.finfo(jnp.float32).min
    logits = jnp.where(visible, logits, big_neg)
    top = jnp.max(logits, axis=-1, keepdims=True)  # [B, H, R, n, C, 1]
    e = jnp.where(visible, jnp.exp(logits - top), 0.0)  # [B, H, R, n, C, 2C]
    total_e = jnp.sum(e, axis=-1)  # [B, H, R, n, C]
    has = total_e > 0
    out = jnp.einsum("bhrnck,bhrnke->bhrnce", e, vc)  # [B, H, R, n, C, E]
    out = out / jnp.where(has, total_e, 1.0)[..., None]
    lse = top[..., 0] + jnp.log(jnp.where(has, total_e, 1.0))  # [B, H, R, n, C]

    # back to positions, then combine the rounds with weights exp(z_r - logsumexp_r z_r)
    packed = jnp.concatenate([out, lse[..., None], has[..., None].astype(jnp.float32)], axis=-1)
    packed = jnp.take_along_axis(packed.reshape(batch, heads, rounds, n * chunk, -1),
                                 slot_q[..., None], axis=3)  # [B, H, R, L, E + 2]
    out, lse, has = packed[..., :-2], packed[..., -2], packed[..., -1] > 0  # [B, H, R, L(, E)]
    lse = jnp.where(has, lse, big_neg)
    weight = jnp.where(has, jnp.exp(lse - jnp.max(lse, axis=2, keepdims=True)), 0.0)
    norm = jnp.sum(weight, axis=2)  # [B, H, L]
    out = jnp.einsum("bhrl,bhrle->bhle", weight, out)  # [B, H, L, E]
    out = out / jnp.where(norm > 0, norm, 1.0)[..., None]
    out = jnp.transpose(out, (0, 2, 1, 3))  # [B, L, H, E]
    if shared_qk:  # a real query that sees no other key attends to itself
        alone = (jnp.transpose(norm, (0, 2, 1)) == 0) & real[:, :, None]  # [B, L, H]
        out = jnp.where(alone[..., None], v32, out)
    return out


class Reformer(AttentionBase):
    """LSH attention over bucket-sorted chunks (own chunk + previous chunk, same bucket).

    Attributes:
      num_buckets: b, 1 or even (angular LSH uses b / 2 random directions and their negatives).
      num_hashes: rounds of hashing n_r; their sets are united (duplicates counted once).
      chunk_size: C; a query sees same-bucket keys in its sorted chunk and the one before.
      shared_qk: True: keys := q / ||q|| (the paper's shared-QK; `k` is ignored, self masked);
        False: hash q and k separately with the same rotations.
      seed: fixes the random rotations.
    """

    num_buckets: int = 8
    num_hashes: int = 1
    chunk_size: int = 16
    shared_qk: bool = True
    seed: int = 0
    # 5 chunks of 3 at L = 13, 4 buckets, 2 rounds: exercises chunks, buckets and duplicates
    small_settings: ClassVar[dict] = {"num_buckets": 4, "num_hashes": 2, "chunk_size": 3}

    capabilities = Capabilities(cross_attention=False)

    def flops(self, q_len, kv_len, head_dim):
        # per round: hashing 2·L·d·(b/2) for q (and k), and chunk x 2·chunk logits and values,
        # 2 · 2 · (L / C rounded up to chunks) · C · 2C · d; the causal per-bucket layout adds up
        # to b + 1 (partly empty) chunks, not counted here.
        chunk = min(self.chunk_size, q_len)
        n = -(-q_len // chunk)
        hashing = (1 if self.shared_qk else 2) * 2.0 * q_len * head_dim * (self.num_buckets // 2)
        return self.num_hashes * (hashing + 8.0 * n * chunk * chunk * head_dim)

    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        if self.num_buckets < 1 or (self.num_buckets > 1 and self.num_buckets % 2):
            raise ValueError(f"reformer num_buckets must be 1 or even, got {self.num_buckets}")
        if self.num_hashes < 1 or self.chunk_size < 1:
            raise ValueError(f"reformer num_hashes and chunk_size must be >= 1, got "
                             f"{self.num_hashes}, {self.chunk_size}")
        real = jnp.ones(q.shape[:2], bool) if mask is None else mask  # [B, L]
        out = lsh_attention(q, k, v, real, causal=causal, num_buckets=self.num_buckets,
                            num_hashes=self.num_hashes, chunk_size=self.chunk_size,
                            shared_qk=self.shared_qk, seed=self.seed)  # [B, L, H, E] float32
        return out.astype(q.dtype)


VARIANT = Reformer
