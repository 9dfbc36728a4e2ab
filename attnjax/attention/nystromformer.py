"""Nyströmformer: softmax attention through a Nyström low-rank approximation with landmarks.

Paper: Xiong et al. 2021, "Nyströmformer: A Nyström-Based Algorithm for Approximating
Self-Attention" (arXiv:2102.03902).
Idea: with m landmarks Q̃, K̃ (means of m contiguous segments of the queries / keys),
  softmax(Q Kᵀ/√d) ≈ F A⁺ B,  F = softmax(Q K̃ᵀ/√d) [L, m],  A = softmax(Q̃ K̃ᵀ/√d) [m, m],
  B = softmax(Q̃ Kᵀ/√d) [m, L],  out = F (A⁺ (B V)),
where A⁺ is the Moore-Penrose pseudo-inverse, approximated by the paper's iteration
  Z₀ = Aᵀ / (‖A‖₁ ‖A‖∞),  Z ← ¼ Z (13 I - A Z (15 I - A Z (7 I - A Z)))   (pinv_iterations times;
the norms per sequence and head, not over the batch as the paper's code does).
Segments: position j belongs to landmark ⌊j · m / L⌋ (sizes differ by at most one; m is capped at
L, and m = L makes every landmark one token, so F = A = B = softmax and out ≈ softmax attention).
Optional skip: a depthwise convolution of V over the sequence (kernel conv_kernel, one filter per
head) is added to the output, as in the paper's code; conv_kernel = 0 turns it off.
Padding: landmarks are masked means over the real tokens of each segment (queries and keys: the
mask is the sequence's token mask), a landmark whose segment is all padding is dropped (masked
out of every softmax, so A⁺ has exact zeros there), padded keys are excluded exactly from B's
softmax, and padded values are zeroed (for the convolution).
Non-causal only: landmarks mix all positions. Self-attention only (the landmarks of Q and K
share the token mask).
Complexity per head: time O(L · m · d + m³ · iterations), memory O(L · m + m²). This
implementation forms the segment means as a one-hot [m, L] product (O(m · L · d), the same order
as F and B), and `flops` counts that.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.attention.base import AttentionBase, Capabilities, masked_softmax, repeat_kv


def iterative_pinv(a, iterations: int):
    """Moore-Penrose pseudo-inverse of a [..., m, m] by the paper's cubic Newton-Schulz iteration
    (matmuls at full float32 precision); an all-zero matrix gives zeros."""
    mm = lambda x, y: jnp.matmul(x, y, precision="highest")
    abs_a = jnp.abs(a)
    norm = abs_a.sum(-2).max(-1) * abs_a.sum(-1).max(-1)  # ‖A‖₁ ‖A‖∞, [...]
    z = jnp.swapaxes(a, -1, -2) / jnp.where(norm > 0, norm, 1.0)[..., None, None]
    eye = jnp.eye(a.shape[-1], dtype=a.dtype)

    def step(_, z):
        az = mm(a, z)
        return 0.25 * mm(z, 13 * eye - mm(az, 15 * eye - mm(az, 7 * eye - az)))

    return jax.lax.fori_loop(0, iterations, step, z)  # a scan: differentiable


class Nystromformer(AttentionBase):
    """F A⁺ (B V) with segment-mean landmarks and an iterative pseudo-inverse.

    Attributes:
      num_landmarks: m (capped at the sequence length).
      pinv_iterations: iterations of the pseudo-inverse (6 in the paper).
      conv_kernel: width of the depthwise convolution skip on V; 0 = no skip (the paper's code
        uses 33).
    """

    num_landmarks: int = 32
    pinv_iterations: int = 6
    conv_kernel: int = 0
    small_settings: ClassVar[dict] = {"num_landmarks": 4, "conv_kernel": 3}  # segments of 3-4

    capabilities = Capabilities(causal=False, cross_attention=False, padding_mask=True)

    def flops(self, q_len, kv_len, head_dim):
        m = min(self.num_landmarks, q_len)
        means = 2.0 * m * (q_len + kv_len) * head_dim  # one-hot segment means of Q and K
        kernels = 2.0 * m * (q_len + m + kv_len) * head_dim  # F, A, B logits
        pinv = 8.0 * self.pinv_iterations * m**3  # four m x m matmuls per iteration
        apply = 2.0 * m * (kv_len + m + q_len) * head_dim  # B V, A⁺ (B V), F (A⁺ B V)
        return means + kernels + pinv + apply + 2.0 * q_len * self.conv_kernel * head_dim

    @nn.compact
    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        if self.num_landmarks < 1 or self.pinv_iterations < 0 or self.conv_kernel < 0:
            raise ValueError("nystromformer needs num_landmarks >= 1, pinv_iterations >= 0 and "
                             "conv_kernel >= 0")
        batch, length, heads, dim = q.shape
        m = min(self.num_landmarks, length)
        real = jnp.ones((batch, length), bool) if mask is None else mask  # [B, L]
        scale = dim**-0.25  # (d^(-1/4) q)·(d^(-1/4) k) = q·k/√d
        keep = real[:, :, None, None]  # [B, L, 1, 1]
        q32 = jnp.where(keep, q.astype(jnp.float32) * scale, 0.0)  # [B, L, H, D]
        k32 = jnp.where(keep, repeat_kv(k.astype(jnp.float32), heads) * scale, 0.0)
        v32 = jnp.where(keep, repeat_kv(v.astype(jnp.float32), heads), 0.0)  # [B, L, H, E]

        # Landmarks: masked segment means; a segment with no real token gives no landmark.
        segment = jnp.arange(length) * m // length  # [L] landmark of each position
        member = (segment[None, None, :] == jnp.arange(m)[None, :, None]) & real[:, None, :]
        count = member.sum(-1)  # [B, m]
        valid = count > 0  # [B, m]
        member = member / jnp.maximum(count, 1)[..., None].astype(jnp.float32)  # [B, m, L]
        q_land = jnp.einsum("bml,blhd->bmhd", member, q32)  # [B, m, H, D]
        k_land = jnp.einsum("bml,blhd->bmhd", member, k32)  # [B, m, H, D]

        both = (valid[:, :, None] & valid[:, None, :])[:, None]  # [B, 1, m, m]
        f_logits = jnp.einsum("bqhd,bmhd->bhqm", q32, k_land)  # [B, H, L, m]
        f = masked_softmax(f_logits, valid[:, None, None, :])  # [B, H, L, m]
        a = masked_softmax(jnp.einsum("bmhd,bnhd->bhmn", q_land, k_land), both)  # [B, H, m, m]
        b_mask = (valid[:, :, None] & real[:, None, :])[:, None]  # [B, 1, m, L]
        b = masked_softmax(jnp.einsum("bmhd,bkhd->bhmk", q_land, k32), b_mask)  # [B, H, m, L]

        bv = jnp.einsum("bhmk,bkhe->bhme", b, v32)  # [B, H, m, E]
        z = iterative_pinv(a, self.pinv_iterations)  # [B, H, m, m]
        zbv = jnp.matmul(z, bv, precision="highest")  # [B, H, m, E]
        out = jnp.einsum("bhqm,bhme->bqhe", f, zbv)  # [B, L, H, E]

        if self.conv_kernel > 0:  # depthwise conv of V along the sequence, centred, per head
            width = self.conv_kernel
            kernel = self.param("conv", nn.initializers.lecun_normal(), (width, heads))  # [K, H]
            left = (width - 1) // 2
            vp = jnp.pad(v32, [(0, 0), (left, width - 1 - left), (0, 0), (0, 0)])  # [B,L+K-1,H,E]
            out = out + sum(kernel[t][:, None] * vp[:, t : t + length] for t in range(width))
        return out.astype(q.dtype)  # [B, L, H, E]


VARIANT = Nystromformer
