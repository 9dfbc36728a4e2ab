"""Reformer (LSH) and Sinkhorn attention against independent float64 NumPy computations.

The contract (shapes, gradients, no future leak, padding, batch rows, GQA) is in test_attention.py;
here: the Reformer's bucket / sort / chunk rule and its multi-round union, its reduction to full
attention with the self mask, deterministic hashing; Sinkhorn's balancing, its causal prefix
balancing, the whole sorted-block attention, and its reduction to softmax with one block.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import attention
from attnjax.attention.reformer import lsh_buckets, random_rotations
from attnjax.attention.sinkhorn import sinkhorn

B, L, H = 2, 13, 2


def _key_mask():
    """Row 0: last 3 keys padded. Row 1: the first and the last 4 padded."""
    mask = np.ones((B, L), bool)
    mask[0, -3:] = False
    mask[1, 0] = mask[1, -4:] = False
    return mask


def _normal(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _softmax_rows(logits, allowed):
    """Row softmax of float64 logits over `allowed` entries; rows with none give zeros."""
    x = np.where(allowed, logits, -np.inf)
    top = x.max(-1, keepdims=True)
    e = np.where(allowed, np.exp(x - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = e.sum(-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


# ------------------------------------------------------------------------------------ reformer


def _reformer(**settings):
    return attention.create("reformer", **settings)


def _np_buckets(x, rot):
    """Angular LSH in float64: x [L, D], rot [R, D, b/2] -> [R, L] = argmax([xR; -xR])."""
    proj = np.einsum("ld,rdn->rln", x, rot)
    both = np.concatenate([proj, -proj], axis=-1)
    top2 = np.sort(both, axis=-1)[..., -2:]
    assert (top2[..., 1] - top2[..., 0] > 1e-4).all(), "a near tie float32 could break"
    return both.argmax(-1)


def _np_chunk_ids(buckets, real, chunk, causal):
    """One round's chunk id of each real position (-1 if padded). Non-causal (the paper): sort
    the real positions by (bucket, position), chunk id = sorted index // C. Causal: chunks are
    cut inside each bucket, id = (earlier real positions in the same bucket) // C."""
    ids = np.full(len(buckets), -1)
    kept = [i for i in range(len(buckets)) if real[i]]
    if causal:
        for i in kept:
            ids[i] = sum(1 for j in kept if j < i and buckets[j] == buckets[i]) // chunk
    else:
        for s, i in enumerate(sorted(kept, key=lambda i: (buckets[i], i))):
            ids[i] = s // chunk
    return ids


def _np_reformer_weights(q, k, real, causal, shared, rot, chunk):
    """[L, L] weights of one head: softmax over the union over rounds of {same bucket, key chunk
    = query chunk or the one before}, real keys, j <= i if causal; shared-QK: keys q/|q|, no
    self unless nothing else is visible (then weight 1 on itself). Padded queries: zeros."""
    length, dim = q.shape
    keys = q / np.linalg.norm(q, axis=-1, keepdims=True) if shared else k
    bq = _np_buckets(q, rot)
    bk = bq if shared else _np_buckets(k, rot)
    seen = np.zeros((length, length), bool)
    for r in range(rot.shape[0]):
        cq = _np_chunk_ids(bq[r], real, chunk, causal)
        ck = cq if shared else _np_chunk_ids(bk[r], real, chunk, causal)
        for i in range(length):
            for j in range(length):
                seen[i, j] |= bool(real[i] and real[j] and bq[r, i] == bk[r, j]
                                   and cq[i] - ck[j] in (0, 1))
    if causal:
        seen &= np.tril(np.ones((length, length), bool))
    allowed = seen & ~np.eye(length, dtype=bool) if shared else seen
    weights = _softmax_rows(q @ keys.T / math.sqrt(dim), allowed)
    if shared:
        alone = (~allowed.any(-1) & np.asarray(real)).nonzero()[0]
        weights[alone, alone] = 1.0
    return weights, seen


@pytest.mark.parametrize("causal", [False, True])
def test_reformer_one_bucket_whole_chunk_is_full_attention_with_self_mask(causal):
    """num_buckets = 1 and C >= L: every round's set is the whole (causal) sequence, so the
    output is softmax over all other real keys j (j <= i if causal) of q_i·q_j/(|q_j| √d);
    a query that has no other key returns its own value. Padded positions output 0."""
    q, k, v = (_normal(s, B, L, H, 8) for s in (0, 1, 2))
    mask = _key_mask()
    module = _reformer(num_buckets=1, chunk_size=16, num_hashes=2)
    for m in (None, mask):
        out = module.apply({}, *(jnp.asarray(x, jnp.float32) for x in (q, k, v)),
                           mask=None if m is None else jnp.asarray(m), causal=causal)
        real = np.ones((B, L), bool) if m is None else m
        keys = q / np.linalg.norm(q, axis=-1, keepdims=True)
        logits = np.einsum("bihd,bjhd->bhij", q, keys) / math.sqrt(8)
        allowed = real[:, None, None, :] & ~np.eye(L, dtype=bool)  # [B, 1, L, L]
        if causal:
            allowed = allowed & np.tril(np.ones((L, L), bool))
        ref = np.einsum("bhij,bjhd->bihd", _softmax_rows(logits, allowed), v)
        alone = ~allowed.any(-1)[:, 0] & real  # [B, L]: only itself -> its own value
        ref = np.where(alone[:, :, None, None], v, ref) * real[:, :, None, None]
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    if causal:  # query 0 sees only itself
        np.testing.assert_allclose(out[0, 0], v[0, 0], rtol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shared", [True, False])
def test_reformer_visible_keys_match_numpy_buckets_sort_and_chunks(causal, shared):
    """With one-hot values (v_j = e_j) each output row is that query's weight row. The keys with
    positive weight must be exactly the NumPy bucket + sort + chunk sets (4 buckets, chunks of
    3, 2 rounds), and the weights their float64 softmax (the rounds' duplicates corrected)."""
    dim, settings = 16, {"num_buckets": 4, "chunk_size": 3, "num_hashes": 2}
    q, k = _normal(3, B, L, H, dim), _normal(4, B, L, H, dim)
    v = np.broadcast_to(np.eye(L, dim)[None, :, None, :], (B, L, H, dim))
    mask = _key_mask()
    out = _reformer(shared_qk=shared, **settings).apply(
        {}, *(jnp.asarray(x, jnp.float32) for x in (q, k, v)), mask=jnp.asarray(mask),
        causal=causal)
    weights = np.asarray(out)[..., :L].transpose(0, 2, 1, 3)  # [B, H, Lq, Lk]
    rot = np.asarray(random_rotations(0, 2, dim, 4), np.float64)
    excluded = 0
    for b in range(B):
        for h in range(H):
            ref, seen = _np_reformer_weights(q[b, :, h], k[b, :, h], mask[b], causal, shared,
                                             rot, chunk=3)
            np.testing.assert_array_equal(weights[b, h] > 0, ref > 0, err_msg=f"row {b} head {h}")
            np.testing.assert_allclose(weights[b, h], ref, atol=2e-6)
            excluded += int((~seen[mask[b]][:, mask[b]]).any())
    assert excluded, "the case must leave some real keys out of some queries' sets"
    if causal:
        assert (np.triu(weights, 1) == 0).all(), "a causal query attends to a future key"


def test_reformer_separate_qk_leaks_no_future_and_no_padding():
    """The contract checks shared-QK; here hashing q and k separately (same shapes and settings
    as above, so no new compilation): outputs up to t are bit-identical whatever q, k, v hold
    after t, and padded keys change nothing."""
    module = _reformer(shared_qk=False, num_buckets=4, chunk_size=3, num_hashes=2)
    q, k, v = (jnp.asarray(_normal(s, B, L, H, 16), jnp.float32) for s in (22, 23, 24))
    noise = [jnp.asarray(_normal(s, B, L, H, 16), jnp.float32) * 3 for s in (25, 26, 27)]
    mask = jnp.asarray(_key_mask())

    def run(q, k, v, causal):
        return np.asarray(module.apply({}, q, k, v, mask=mask, causal=causal))

    base = run(q, k, v, True)
    for t in (0, 3, 6, 9):
        future = (jnp.arange(L) > t)[None, :, None, None]
        moved = [jnp.where(future, x2, x) for x, x2 in zip((q, k, v), noise, strict=True)]
        np.testing.assert_array_equal(run(*moved, True)[:, : t + 1], base[:, : t + 1])
    padded = ~mask[:, :, None, None]
    for causal in (False, True):
        np.testing.assert_array_equal(
            run(q, jnp.where(padded, noise[1], k), jnp.where(padded, noise[2], v), causal),
            run(q, k, v, causal))


def test_reformer_hashing_is_deterministic():
    """Identical vectors get identical buckets wherever they stand (rotations fixed by seed,
    shared by heads and batch rows); buckets only see the direction."""
    x = _normal(5, B, L, H, 8)
    x[1] = x[0]
    x[:, 9] = x[:, 2]
    x = jnp.asarray(x, jnp.float32)
    rot = random_rotations(0, 3, 8, 8)
    np.testing.assert_array_equal(rot, random_rotations(0, 3, 8, 8))
    assert not np.array_equal(rot, random_rotations(1, 3, 8, 8))
    hashed = jax.jit(lsh_buckets, static_argnums=2)
    buckets = np.asarray(hashed(x, rot, 8))  # [B, H, R, L]
    assert buckets.shape == (B, H, 3, L) and buckets.min() >= 0 and buckets.max() < 8
    assert len(np.unique(buckets)) > 2
    np.testing.assert_array_equal(buckets[1], buckets[0])
    np.testing.assert_array_equal(buckets[..., 9], buckets[..., 2])
    np.testing.assert_array_equal(hashed(2.5 * x, rot, 8), buckets)
    # the module: the same inputs, the same outputs, bit for bit
    module = _reformer(num_buckets=4, chunk_size=3, num_hashes=2)
    q, k, v = (jnp.asarray(_normal(s, B, L, H, 16), jnp.float32) for s in (6, 7, 8))
    mask = jnp.asarray(_key_mask())
    first = module.apply({}, q, k, v, mask=mask)
    np.testing.assert_array_equal(first, _reformer(num_buckets=4, chunk_size=3, num_hashes=2)
                                  .apply({}, q, k, v, mask=mask))


# ------------------------------------------------------------------------------------ sinkhorn


def _np_sinkhorn(log_p, iters, allowed):
    """Float64 Sinkhorn: rows then columns, `iters` times, over the allowed entries only."""
    x = np.where(allowed, log_p, -np.inf)
    for _ in range(iters):
        for axis in (-1, -2):
            top = np.max(x, axis=axis, keepdims=True)
            top = np.where(np.isfinite(top), top, 0.0)
            total = np.exp(x - top).sum(axis=axis, keepdims=True)
            lse = top + np.log(np.where(total > 0, total, 1.0))
            x = np.where(allowed, x - lse, -np.inf)
    return np.where(allowed, np.exp(x), 0.0)


def _sinkhorn_params(dim, max_blocks, seed=0):
    """Random sortnet parameters: kernel = [W1 | W2] [H, D, D + N], bias = [b1 | b2]."""
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal((H, dim, dim + max_blocks)) / math.sqrt(dim)
    bias = 0.5 * rng.standard_normal((H, dim + max_blocks))
    bias[:, dim:] += 0.5  # most scores above the ReLU
    return {"params": {"sort": {"kernel": jnp.asarray(kernel, jnp.float32),
                                "bias": jnp.asarray(bias, jnp.float32)}}}


def _np_sinkhorn_attention(q, k, v, real, causal, params, block, iters, temperature):
    """One batch row, float64: q, k, v [L, H, D], real [L] -> (out [L, H, D], P [H, n, n])."""
    length, heads, dim = q.shape
    n = -(-length // block)
    kernel, bias = (np.asarray(params["params"]["sort"][n], np.float64) for n in ("kernel", "bias"))
    w1, w2, b1, b2 = kernel[..., :dim], kernel[..., dim:], bias[:, :dim], bias[:, dim:]
    out, perms = np.zeros_like(q), np.zeros((heads, n, n))
    for h in range(heads):
        summary = np.zeros((n, dim))
        for i in range(n):
            span = range(i * block + 1) if causal else range(i * block, min(i * block + block,
                                                                            length))
            idx = [j for j in span if real[j]]
            if idx:
                summary[i] = k[idx, h].mean(0)
        hidden = np.maximum(summary @ w1[h] + b1[h], 0)
        scores = np.maximum(hidden @ w2[h] + b2[h], 0)[:, :n] / temperature
        if causal:  # row i: the rows <= i of the strictly lower triangle, balanced alone
            perm = np.zeros((n, n))
            for i in range(n):
                lower = np.tril(np.ones((i + 1, i + 1), bool), -1)
                perm[i, : i + 1] = _np_sinkhorn(scores[: i + 1, : i + 1], iters, lower)[i]
        else:
            perm = _np_sinkhorn(scores, iters, np.ones((n, n), bool))
        perms[h] = perm
        for i in range(n):
            keys, values = [], []
            for s in range(block):  # sorted slot s: real keys at slot s of every block, mixed
                src = [j * block + s for j in range(n) if j * block + s < length]
                w = np.array([perm[i, pos // block] * real[pos] for pos in src])
                if w.sum() > 0:
                    keys.append(w @ k[src, h] / w.sum())
                    values.append(w @ v[src, h] / w.sum())
            for t in range(i * block, min(i * block + block, length)):
                own = [j for j in range(i * block, min(i * block + block, length))
                       if real[j] and (not causal or j <= t)]
                kk = np.array(keys + [k[j, h] for j in own]).reshape(-1, dim)
                vv = np.array(values + [v[j, h] for j in own]).reshape(-1, dim)
                if len(kk):
                    w = _softmax_rows(kk @ q[t, h] / math.sqrt(dim), np.ones(len(kk), bool))
                    out[t, h] = w @ vv
    return out, perms


@functools.cache
def _sinkhorn_fn(causal, **settings):
    """Jitted apply that also captures the sort module's output, the soft permutation."""
    module = attention.create("sinkhorn", **settings)

    def run(params, q, k, v, mask):
        out, state = module.apply(params, q, k, v, mask=mask, causal=causal,
                                  capture_intermediates=True, mutable=["intermediates"])
        return out, state["intermediates"]["sort"]["__call__"][0]

    return jax.jit(run)


def test_sinkhorn_balancing_is_doubly_stochastic():
    log_p = jnp.asarray(_normal(9, 3, 6, 6) / 0.75, jnp.float32)
    balance = jax.jit(sinkhorn)  # iters traced: one compile
    errors = []
    for iters in (1, 2, 4, 8, 32):
        perm = np.asarray(balance(log_p, iters))
        assert (perm > 0).all()
        np.testing.assert_allclose(perm.sum(-2), 1.0, atol=1e-5)  # columns: normalised last
        errors.append(np.abs(perm.sum(-1) - 1).max())
    assert errors == sorted(errors, reverse=True) and errors[0] > 0.05
    assert errors[3] < 1e-2 and errors[4] < 1e-5  # rows converge: 8 iterations, then 32
    np.testing.assert_allclose(perm, _np_sinkhorn(np.asarray(log_p, np.float64), 32, True),
                               atol=1e-5)
    # masked: excluded entries stay exactly 0, an empty row / column stays 0
    lower = np.tril(np.ones((6, 6), bool), -1)
    perm = np.asarray(sinkhorn(log_p, 8, jnp.asarray(lower)))
    assert (perm[:, ~lower] == 0).all()
    np.testing.assert_allclose(perm, _np_sinkhorn(np.asarray(log_p, np.float64), 8, lower),
                               atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_sinkhorn_matches_numpy(causal):
    """Block 4 at L = 13 (4 blocks, the last with one position), padded keys: the soft
    permutation and the whole output against the float64 formula; non-causal P is doubly
    stochastic up to Sinkhorn's residual, causal P is strictly lower triangular."""
    dim, settings = 8, {"block_size": 4, "max_length": 16}
    q, k, v = (_normal(s, B, L, H, dim) for s in (10, 11, 12))
    mask = _key_mask()
    params = _sinkhorn_params(dim, 4)
    out, perm = _sinkhorn_fn(causal, **settings)(
        params, *(jnp.asarray(x, jnp.float32) for x in (q, k, v)), jnp.asarray(mask))
    perm = np.asarray(perm)  # [B, H, n, n]
    for b in range(B):
        ref, ref_perm = _np_sinkhorn_attention(q[b], k[b], v[b], mask[b], causal, params, 4, 8,
                                               0.75)
        np.testing.assert_allclose(perm[b], ref_perm, atol=1e-5)
        np.testing.assert_allclose(out[b], ref, rtol=1e-5, atol=1e-5)
    if causal:
        assert (np.triu(perm) == 0).all(), "a block sorted to itself or a later block"
    else:
        np.testing.assert_allclose(perm.sum(-2), 1.0, atol=1e-5)
        np.testing.assert_allclose(perm.sum(-1), 1.0, atol=1e-2)
        assert (perm.max(-1) < 0.999).all(), "the test should see a soft permutation"


@pytest.mark.parametrize("causal", [False, True])
def test_sinkhorn_one_block_is_softmax(causal):
    """block_size >= L: one block, P = [[1]], the sorted block is the block itself (causal: no
    sorted block), so the output is plain (causal) softmax attention over the real keys."""
    q, k, v = (_normal(s, B, L, H, 8) for s in (13, 14, 15))
    mask = _key_mask()
    fn = _sinkhorn_fn(causal, block_size=16, max_length=16)
    for m in (np.ones((B, L), bool), mask):
        out, perm = fn(_sinkhorn_params(8, 1), *(jnp.asarray(x, jnp.float32) for x in (q, k, v)),
                       jnp.asarray(m))
        np.testing.assert_allclose(perm, 0.0 if causal else 1.0, atol=1e-6)
        allowed = np.broadcast_to(m[:, None, None, :], (B, 1, L, L))
        if causal:
            allowed = allowed & np.tril(np.ones((L, L), bool))
        logits = np.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(8)
        ref = np.einsum("bhij,bjhd->bihd", _softmax_rows(logits, allowed), v)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_sinkhorn_causal_leaks_nothing_with_other_blocks():
    """Block 3 (5 blocks at L = 13): outputs up to t are bit-identical whatever q, k, v hold
    after t (the contract test does this with block 4)."""
    fn = _sinkhorn_fn(True, block_size=3, max_length=16)
    params = _sinkhorn_params(8, 6)
    q, k, v = (jnp.asarray(_normal(s, B, L, H, 8), jnp.float32) for s in (16, 17, 18))
    noise = [jnp.asarray(_normal(s, B, L, H, 8), jnp.float32) for s in (19, 20, 21)]
    mask = jnp.asarray(_key_mask())
    base, _ = fn(params, q, k, v, mask)
    for t in (0, 2, 3, 6, 11):
        future = (jnp.arange(L) > t)[None, :, None, None]
        moved = [jnp.where(future, x2, x) for x, x2 in zip((q, k, v), noise, strict=True)]
        np.testing.assert_array_equal(fn(params, *moved, mask)[0][:, : t + 1], base[:, : t + 1])
