"""Control-rate helpers on an explicit grid of blocks, and numerics utilities.

Many synths compute modulation once per block of K samples (amsynth: K = 64) and hold
or interpolate it inside the block. Block ``b`` covers samples ``[b*K, min((b+1)*K, N))``;
the last block may be shorter. ``block_size`` and ``n_samples`` are static Python ints.
Batch dims lead, time (or block index) is last.

Also here, used by the other DSP modules: :func:`blocked_prefix_scan` (a prefix scan
that compiles fast), :func:`strict_round` and :func:`strict_divide` (float32 results
bit-identical to C code under XLA:CPU).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "n_blocks",
    "block_lengths",
    "hold_per_block",
    "interpolate_per_block",
    "block_values_at",
    "seconds_to_samples",
    "strict_round",
    "strict_divide",
    "blocked_prefix_scan",
]

Array = jax.Array


def strict_round(x) -> Array:
    """Identity that forces ``x`` to be rounded to its dtype before further use.

    XLA:CPU always lets LLVM contract ``a + b*c`` into a fused multiply-add (one
    rounding instead of two), which breaks bit-exact emulation of C code compiled
    without FMA (e.g. Debian's x86-64 plugin builds). Wrapping the product,
    ``a + strict_round(b*c)``, blocks the contraction (a NaN-preserving select LLVM
    does not fold). Gradients pass through unchanged.
    """
    x = jnp.asarray(x)
    return jnp.where(jnp.isnan(x), jnp.asarray(jnp.nan, x.dtype), x)


def strict_divide(numerator, denominator) -> Array:
    """``numerator / denominator``, correctly rounded also under XLA:CPU.

    XLA's algebraic simplifier turns a division by a broadcast (a scalar, or a vector
    broadcast along another axis) into a multiplication by the reciprocal, which is off
    by one ulp in ~30% of cases. Making the divisor depend on the numerator's values
    (a NaN-preserving select) keeps a true elementwise division. Use it where C code
    is emulated bit-exactly. Gradients are those of the plain division.
    """
    a = jnp.asarray(numerator)
    b = jnp.asarray(denominator)
    return a / jnp.where(jnp.isnan(a), jnp.ones((), b.dtype), b)


def _sequential_prefix(combine: Callable, elems: tuple, identity: tuple) -> tuple:
    """Inclusive prefix along the last axis by a ``lax.scan`` (vectorised over the rest)."""
    xs = tuple(jnp.moveaxis(x, -1, 0) for x in elems)
    init = tuple(jnp.broadcast_to(jnp.asarray(i, x.dtype), x.shape[1:]) for i, x in zip(identity, xs))

    def body(carry, x):
        y = combine(carry, x)
        return y, y

    _, ys = lax.scan(body, init, xs)
    return tuple(jnp.moveaxis(y, 0, -1) for y in ys)


def blocked_prefix_scan(combine: Callable, elems, identity, block_size: int = 128):
    """Inclusive prefix ``y[n] = x[0] . x[1] . ... . x[n]`` along the last axis.

    ``combine(a, b)`` is an associative operator on tuples of arrays (``a`` before
    ``b``), ``identity`` its identity element (a tuple of scalars). The sequence is cut
    into blocks of ``block_size``; each block is scanned sequentially, vectorised over
    all blocks, and the block totals are combined recursively, then prepended to each
    block. Work O(n), sequential depth ~ ``block_size * log_block_size(n)``, and it
    compiles in a fraction of the time of ``lax.associative_scan`` (whose graph grows
    with log2(n)), which matters inside large jitted renders.

    Args:
      combine: ``(tuple, tuple) -> tuple`` of arrays, elementwise (broadcasting).
      elems: tuple of arrays of shape ``(..., n)`` (or a single array).
      identity: tuple of scalars with ``combine(identity, x) == x`` (or a scalar).
      block_size: static block length.
    Returns:
      Same structure and shapes as ``elems``.
    """
    single = not isinstance(elems, (tuple, list))
    elems = (elems,) if single else tuple(elems)
    identity = (identity,) if single else tuple(identity)
    n = elems[0].shape[-1]
    b = int(block_size)
    if n <= b:
        out = _sequential_prefix(combine, elems, identity)
        return out[0] if single else out
    nb = -(-n // b)
    pad = nb * b - n
    blocks = tuple(
        jnp.concatenate([x, jnp.broadcast_to(jnp.asarray(i, x.dtype), x.shape[:-1] + (pad,))], axis=-1)
        .reshape(x.shape[:-1] + (nb, b))
        for x, i in zip(elems, identity))
    inner = _sequential_prefix(combine, blocks, identity)
    totals = blocked_prefix_scan(combine, tuple(x[..., -1] for x in inner), identity, b)
    before = tuple(
        jnp.concatenate([jnp.broadcast_to(jnp.asarray(i, t.dtype), t.shape[:-1] + (1,)), t[..., :-1]], axis=-1)
        for t, i in zip(totals, identity))
    out = combine(tuple(x[..., None] for x in before), inner)
    out = tuple(y.reshape(y.shape[:-2] + (nb * b,))[..., :n] for y in out)
    return out[0] if single else out


def _check_sizes(block_size: int, n_samples: int) -> None:
    if int(block_size) < 1 or int(n_samples) < 1:
        raise ValueError(f"expected block_size >= 1 and n_samples >= 1, got block_size={block_size}, "
                         f"n_samples={n_samples}")


def n_blocks(n_samples: int, block_size: int) -> int:
    """Number of blocks covering ``n_samples``: ``ceil(n_samples / block_size)``."""
    _check_sizes(block_size, n_samples)
    return -(-int(n_samples) // int(block_size))


def block_lengths(n_samples: int, block_size: int) -> np.ndarray:
    """Length (samples) of each block, shape ``(n_blocks,)``; the last may be shorter."""
    nb = n_blocks(n_samples, block_size)
    lengths = np.full(nb, int(block_size), dtype=np.int64)
    lengths[-1] = int(n_samples) - (nb - 1) * int(block_size)
    return lengths


def _check_blocks(x: Array, block_size: int, n_samples: int) -> int:
    nb = n_blocks(n_samples, block_size)
    if x.ndim < 1 or x.shape[-1] != nb:
        raise ValueError(f"expected per-block values with last axis n_blocks={nb} "
                         f"(n_samples={n_samples}, block_size={block_size}), got shape {x.shape}; "
                         f"compute them with n_blocks(n_samples, block_size)")
    return nb


def hold_per_block(values_per_block, block_size: int, n_samples: int) -> Array:
    """Repeat each block's value over its samples (zero-order hold).

    Args:
      values_per_block: shape ``(..., n_blocks)``.
      block_size: samples per block (static).
      n_samples: output length (static).
    Returns:
      Shape ``(..., n_samples)``.
    """
    v = jnp.asarray(values_per_block)
    _check_blocks(v, block_size, n_samples)
    return jnp.repeat(v, int(block_size), axis=-1)[..., :int(n_samples)]


def interpolate_per_block(targets_per_block, block_size: int, n_samples: int, initial) -> Array:
    """Per-block linear ramps from the previous block's target to this block's target.

    Inside block ``b`` of length ``n``: ``y[i] = prev + ((target - prev)/n) * i`` for
    ``i = 0..n-1``, where ``prev`` is block ``b-1``'s target (``initial`` for ``b = 0``).
    The target is therefore reached at the *first* sample of the next block. The float
    operation order matches amsynth's ``Lerper`` (increment computed first, then
    ``start + inc*i``, no FMA), so the result is bit-identical to its oscillator frequency
    ramps (README §6.3 "Common to all waveforms"); a fresh amsynth voice has
    ``initial = 0`` Hz.

    Args:
      targets_per_block: shape ``(..., n_blocks)``.
      block_size: samples per block (static).
      n_samples: output length (static).
      initial: value before the first block, broadcastable to ``(...)``.
    Returns:
      Shape ``(..., n_samples)``.
    """
    t = jnp.asarray(targets_per_block)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.float32)
    nb = _check_blocks(t, block_size, n_samples)
    k = int(block_size)
    init = jnp.broadcast_to(jnp.asarray(initial, t.dtype), t.shape[:-1])
    prev = jnp.concatenate([init[..., None], t[..., :-1]], axis=-1)
    lengths = jnp.asarray(block_lengths(n_samples, k), t.dtype)
    inc = strict_divide(t - prev, lengths)
    i = jnp.arange(k, dtype=t.dtype)
    y = prev[..., None] + strict_round(inc[..., None] * i)  # (..., nb, k)
    return y.reshape(t.shape[:-1] + (nb * k,))[..., :int(n_samples)]


def block_values_at(x, block_size: int, position: str = "first") -> Array:
    """Sample a per-sample signal once per block.

    Args:
      x: shape ``(..., n_samples)``.
      block_size: samples per block (static).
      position: ``"first"`` (the block's first sample; amsynth reads its LFO there) or
        ``"last"`` (the block's last sample, ``n_samples - 1`` for a short final block;
        amsynth reads its filter envelope there).
    Returns:
      Shape ``(..., n_blocks)``.
    """
    x = jnp.asarray(x)
    n = x.shape[-1]
    nb = n_blocks(n, block_size)
    k = int(block_size)
    if position == "first":
        idx = np.arange(nb) * k
    elif position == "last":
        idx = np.minimum((np.arange(nb) + 1) * k - 1, n - 1)
    else:
        raise ValueError(f"position must be 'first' or 'last', got {position!r}")
    return x[..., idx]


def seconds_to_samples(t_s, sample_rate: float) -> np.ndarray:
    """Sample index of a time, ``int(t_s * sample_rate)`` in float64 (truncation, the
    convention DawDreamer uses for MIDI events). Host-side NumPy helper, not traceable.
    For a differentiable event time pass the float ``t_s * sample_rate`` to functions
    that accept float sample indices (e.g. :func:`diffsynth.envelopes.adsr`)."""
    return np.floor(np.asarray(t_s, np.float64) * float(sample_rate)).astype(np.int64)
