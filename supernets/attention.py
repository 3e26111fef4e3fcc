"""Elastic multi-head self-attention: any prefix of heads, any embedding width, any bit-width.

Heads are kept as a prefix (head h uses columns h*head_dim .. (h+1)*head_dim of q, k, v and rows of
the output projection), so a subnet with fewer heads is the leading slice of every kernel. The
attention itself (QK^T, softmax, AV) runs in float: only the four projections are quantised."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from supernets.linear import ElasticLinear, QuantLinear


def split_heads(t: jax.Array, head_dim: int) -> jax.Array:
    """(..., heads * head_dim) -> (..., heads, head_dim)."""
    return t.reshape(*t.shape[:-1], t.shape[-1] // head_dim, head_dim)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, head_dim: int) -> jax.Array:
    """softmax(QK^T / sqrt(head_dim)) V per head; q, k, v are (..., tokens, heads * head_dim)."""
    qh, kh, vh = (split_heads(t, head_dim) for t in (q, k, v))
    scores = jnp.einsum("...qhd,...khd->...hqk", qh, kh) / jnp.sqrt(jnp.float32(head_dim))
    out = jnp.einsum("...hqk,...khd->...qhd", jax.nn.softmax(scores, axis=-1), vh)
    return out.reshape(q.shape)


class PlainAttention(nnx.Module):
    """Static self-attention of an extracted subnet: exactly `heads` heads, quantised projections."""

    def __init__(self, q: QuantLinear, k: QuantLinear, v: QuantLinear, proj: QuantLinear, *, head_dim: int):
        self.q, self.k, self.v, self.proj = q, k, v, proj
        self.head_dim = head_dim

    def __call__(self, x: jax.Array) -> jax.Array:
        """(batch, tokens, embed) -> (batch, tokens, embed)."""
        return self.proj(attend(self.q(x), self.k(x), self.v(x), self.head_dim))


class ElasticAttention(nnx.Module):
    """Self-attention holding `max_heads` heads; `heads`, `embed_width` and bits are traced."""

    def __init__(self, embed: int, max_heads: int, head_dim: int, *, rngs: nnx.Rngs):
        self.embed, self.max_heads, self.head_dim = embed, max_heads, head_dim
        inner = max_heads * head_dim
        self.q = ElasticLinear(embed, inner, signed_input=True, rngs=rngs)
        self.k = ElasticLinear(embed, inner, signed_input=True, rngs=rngs)
        self.v = ElasticLinear(embed, inner, signed_input=True, rngs=rngs)
        self.proj = ElasticLinear(inner, embed, signed_input=True, rngs=rngs)

    def __call__(self, x: jax.Array, *, embed_width: jax.Array | int, heads: jax.Array | int,
                 w_bits: jax.Array | int, a_bits: jax.Array | int) -> jax.Array:
        """`x` is (batch, tokens, embed), zero past `embed_width`; so is the output."""
        inner = heads * self.head_dim
        kw = dict(in_width=embed_width, out_width=inner, w_bits=w_bits, a_bits=a_bits)
        q, k, v = self.q(x, **kw), self.k(x, **kw), self.v(x, **kw)
        # Inactive heads have q = k = v = 0: their (uniform) attention averages zeros, and the
        # projection masks their columns anyway, so they contribute nothing.
        o = attend(q, k, v, self.head_dim)
        return self.proj(o, in_width=inner, out_width=embed_width, w_bits=w_bits, a_bits=a_bits)

    def extract(self, embed_width: int, heads: int, w_bits: int, a_bits: int) -> PlainAttention:
        """The static attention with the first `heads` heads over the first `embed_width` features."""
        inner = heads * self.head_dim
        q, k, v = (lin.extract(embed_width, inner, w_bits, a_bits) for lin in (self.q, self.k, self.v))
        proj = self.proj.extract(inner, embed_width, w_bits, a_bits)
        return PlainAttention(q, k, v, proj, head_dim=self.head_dim)
