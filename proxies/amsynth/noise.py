"""Replay of amsynth's noise: its global random generator and sample-and-hold counters.

amsynth has ONE random generator for the whole process (README §6.3): a 64-bit LCG
``r = r * 196314165 + 907633515`` seeded with 22222 when the ``.so`` is loaded, and
``randf() = (float)r * 2^-63 - 1``. Every noise oscillator calls it once per sample, every
sample-and-hold (S&H) oscillator once per refresh (``count > (int)(sr / f)``), and the voice's
LFO likewise; per control block the voice runs its LFO block first, then osc1, then osc2.
S&H counters and held values persist in the voice.

So a noise render is deterministic when the process's history is: the render pool of
``proxies.host`` (fork mode) renders every noise preset in a fork of a worker that never
called ``randf``, so the generator starts at 22222 and the S&H counters at 0 before the host
protocol's pre-roll, warm-up and kept render. This module replays that: it counts the calls of
every processed block (pre-roll, warm-up until the voice falls silent, kept render) and jumps
the LCG to the right state, so noise presets render sample-exactly like the plugin through the
pool. Renders of noise presets made any other way (e.g. in-process after other noise renders)
match only statistically.

64-bit integers are emulated with pairs of uint32 (JAX without x64); jumps of ``k`` calls use
precomputed affine maps ``r -> A_k r + C_k (mod 2^64)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["LCG_SEED", "NoiseBlocks", "jump", "randf", "replay_blocks", "per_sample_values"]

LCG_A = 196314165
LCG_C = 907633515
LCG_SEED = 22222
_MASK = (1 << 64) - 1
MAX_JUMP = 3 * 64 + 64  # calls per block (LFO + 2 oscillators) plus a block of offsets

U32 = jnp.uint32
F32 = jnp.float32

# kinds of random source
NONE, NOISE, SAMPLE_HOLD = 0, 1, 2


def _jump_table(kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A_k, C_k)`` for k = 0..kmax as uint32 ``[kmax + 1, 2]`` (hi, lo) pairs."""
    a, c = 1, 0
    table_a, table_c = [], []
    for _ in range(kmax + 1):
        table_a.append(a)
        table_c.append(c)
        a, c = (a * LCG_A) & _MASK, (c * LCG_A + LCG_C) & _MASK
    split = lambda v: np.array([[x >> 32, x & 0xFFFFFFFF] for x in v], dtype=np.uint32)  # noqa: E731
    return split(table_a), split(table_c)


_TABLE_A, _TABLE_C = _jump_table(MAX_JUMP)


def _mul_full32(a, b):
    """Full 64-bit product of uint32 arrays as (hi, lo)."""
    a0, a1 = a & U32(0xFFFF), a >> U32(16)
    b0, b1 = b & U32(0xFFFF), b >> U32(16)
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = p01 + p10
    c1 = (mid < p01).astype(U32)
    lo = p00 + (mid << U32(16))
    c2 = (lo < p00).astype(U32)
    hi = p11 + (mid >> U32(16)) + (c1 << U32(16)) + c2
    return hi, lo


def _affine(a_hi, a_lo, c_hi, c_lo, r_hi, r_lo):
    """``A r + C (mod 2^64)`` on (hi, lo) uint32 pairs."""
    hi, lo = _mul_full32(a_lo, r_lo)
    hi = hi + a_hi * r_lo + a_lo * r_hi
    lo2 = lo + c_lo
    hi = hi + c_hi + (lo2 < lo).astype(U32)
    return hi, lo2


def jump(r, k):
    """LCG state after ``k`` more calls (``0 <= k <= MAX_JUMP``, int array) from ``r = (hi, lo)``."""
    k = jnp.clip(k, 0, MAX_JUMP)
    ta, tc = jnp.asarray(_TABLE_A), jnp.asarray(_TABLE_C)
    return _affine(ta[k, 0], ta[k, 1], tc[k, 0], tc[k, 1], *r)


def jump_far(r, k, bits: int = 24):
    """LCG state after ``k`` calls for any ``0 <= k < 2^bits`` (binary decomposition)."""
    a, c = LCG_A, LCG_C
    for m in range(bits):
        bit = ((k >> m) & 1) == 1
        nh, nl = _affine(U32(a >> 32), U32(a & 0xFFFFFFFF), U32(c >> 32), U32(c & 0xFFFFFFFF), *r)
        r = (jnp.where(bit, nh, r[0]), jnp.where(bit, nl, r[1]))
        a, c = (a * a) & _MASK, (c * a + c) & _MASK
    return r


def randf(r):
    """``(float)r * 2^-63 - 1`` of the state ``r = (hi, lo)`` (the value a call returns)."""
    hi, lo = r
    x = hi.astype(F32) * F32(2.0**-31) + lo.astype(F32) * F32(2.0**-63)
    return x - F32(1)


def seed_state(batch: int):
    return (jnp.full((batch,), LCG_SEED >> 32, U32), jnp.full((batch,), LCG_SEED & 0xFFFFFFFF, U32))


class _Counter(NamedTuple):
    count: jax.Array  # int32 [B]
    held: jax.Array  # float32 [B]


def _schedule(count, period, length):
    """S&H refreshes inside a block of ``length`` samples: (first index, step, number)."""
    every = period < 0  # (int)(sr / 0) = INT_MIN: a new value every sample
    step = jnp.where(every, 1, period + 1)
    first = jnp.where(every, 0, jnp.maximum(0, period + 1 - count))
    n = jnp.where(first < length, 1 + (length - 1 - first) // jnp.maximum(step, 1), 0)
    return first, step, n


def _advance_counter(c: _Counter, kind, period, length, r, base):
    """One block of a source: calls made, the value at the block's first sample, new counter."""
    first, step, n_sh = _schedule(c.count, period, length)
    n = jnp.where(kind == NOISE, length, jnp.where(kind == SAMPLE_HOLD, n_sh, 0))
    v_first_call = randf(jump(r, base + 1))
    value0 = jnp.where(kind == NOISE, v_first_call,
                       jnp.where((kind == SAMPLE_HOLD) & (first == 0) & (n_sh > 0), v_first_call, c.held))
    last = first + (n_sh - 1) * step
    new_count = jnp.where(n_sh > 0, length - last, c.count + length)
    new_held = jnp.where(n_sh > 0, randf(jump(r, base + n_sh)), c.held)
    sh = kind == SAMPLE_HOLD
    return n, value0, _Counter(jnp.where(sh, new_count, c.count), jnp.where(sh, new_held, c.held))


class NoiseBlocks(NamedTuple):
    """Per block ``[B, NB]``: LCG state and counters at the block start, calls made, LFO value."""

    r_hi: jax.Array
    r_lo: jax.Array
    calls_lfo: jax.Array
    calls_osc1: jax.Array
    count_lfo: jax.Array
    count1: jax.Array
    count2: jax.Array
    held_lfo: jax.Array
    held1: jax.Array
    held2: jax.Array
    lfo0: jax.Array


def replay_blocks(state, kinds, lengths, active, lfo_period, lfo_det, p_lfo_noise, p_lfo_sh, periods_fn):
    """Scan the blocks of one render, counting ``randf`` calls.

    Args:
      state: ``(r, counters)`` at the first block; ``r = (hi, lo)``, counters a tuple of three
        :class:`_Counter` (LFO, osc1, osc2).
      kinds: ``[3, B]`` int source kinds (LFO, osc1, osc2).
      lengths: ``[NB]`` block lengths (static numpy); active: ``[B, NB]`` bool (voice processed).
      lfo_period: ``[B]`` int LFO S&H period; lfo_det: ``[B, NB]`` LFO value at block starts with
        the noise shapes at 0; p_lfo_noise, p_lfo_sh: ``[B]`` their probabilities (the LFO value
        is ``lfo_det + p_noise * noise + p_sh * held``).
      periods_fn: ``lfo0 [B] -> (period1, period2)`` int ``[B]`` (osc S&H periods of the block).
    Returns:
      ``(final state, NoiseBlocks)``.
    """

    def body(carry, xs):
        (r, (c_l, c_1, c_2)) = carry
        length, act, det = xs
        length = jnp.where(act, length, 0)
        n_l, v_l, c_l2 = _advance_counter(c_l, kinds[0], lfo_period, length, r, jnp.zeros_like(length))
        lfo0 = det + p_lfo_noise * jnp.where(kinds[0] == NOISE, v_l, F32(0)) + \
            p_lfo_sh * jnp.where(kinds[0] == SAMPLE_HOLD, v_l, F32(0))
        p1, p2 = periods_fn(lfo0)
        n_1, _, c_12 = _advance_counter(c_1, kinds[1], p1, length, r, n_l)
        n_2, _, c_22 = _advance_counter(c_2, kinds[2], p2, length, r, n_l + n_1)
        out = (r[0], r[1], n_l, n_1, c_l.count, c_1.count, c_2.count, c_l.held, c_1.held, c_2.held, lfo0)
        r_next = jump(r, n_l + n_1 + n_2)
        return (r_next, (c_l2, c_12, c_22)), out

    xs = (jnp.asarray(lengths, jnp.int32)[:, None] * jnp.ones_like(active[:, 0], jnp.int32)[None, :],
          active.T, lfo_det.T)
    final, outs = lax.scan(body, state, xs)
    return final, NoiseBlocks(*(o.T for o in outs))


_MAX_SH_CALLS = 22  # S&H refreshes per 64-sample block when the period >= 2 (f <= sr/2)


def per_sample_values(nb: NoiseBlocks, kinds, lfo_period, period1, period2, expand, index):
    """Per-sample ``[B, T]`` values of the three sources in the kept render.

    Noise: call ``base + i + 1`` of the block (``base`` = the calls of the sources run before
    it), from per-position jump constants (no gathers). S&H: the held value before the block's
    first refresh, then the value of the k-th refresh, picked from the block's candidates
    (one gather); a period of -1 (f = 0) refreshes every sample, like noise.

    Args:
      nb: :class:`NoiseBlocks` of the kept render.
      period1, period2: ``[B, NB]`` osc S&H periods per block; lfo_period ``[B]``.
      expand: per-block ``[B, NB]`` -> per-sample ``[B, T]``.
      index: ``[T]`` sample index inside its block (static NumPy ints).
    Returns:
      ``(lfo, osc1, osc2)`` values: noise -> this sample's call, S&H -> the held value.
    """
    idx_np = np.asarray(index, np.int64).reshape(-1)
    index = jnp.asarray(idx_np, jnp.int32)[None, :]
    ta = jnp.asarray(_TABLE_A[idx_np + 1])  # [T, 2] jump constants by position (static)
    tc = jnp.asarray(_TABLE_C[idx_np + 1])
    n_blocks = nb.r_hi.shape[1]
    block_of = jnp.asarray(np.cumsum(idx_np == 0) - 1, jnp.int32)[None, :]  # [1, T]
    i_f = index.astype(F32)

    def source(kind, count, held, period, base):
        r_base = jump((nb.r_hi, nb.r_lo), base)  # [B, NB]: state before the source's first call
        rb = (expand(r_base[0]), expand(r_base[1]))
        noise = randf(_affine(ta[:, 0], ta[:, 1], tc[:, 0], tc[:, 1], *rb))
        first, step, _ = _schedule(count, period, jnp.full_like(count, 64))
        # candidate values of the k-th refresh in each block, k = 1.._MAX_SH_CALLS
        cand = [held]
        r_k = r_base
        a1, c1 = (U32(LCG_A >> 32), U32(LCG_A & 0xFFFFFFFF)), (U32(LCG_C >> 32), U32(LCG_C & 0xFFFFFFFF))
        for _ in range(_MAX_SH_CALLS):
            r_k = _affine(*a1, *c1, *r_k)
            cand.append(randf(r_k))
        cand = jnp.stack(cand, -1).reshape(count.shape[0], n_blocks * (_MAX_SH_CALLS + 1))
        first_t, step_t = expand(first), expand(step)
        k = jnp.where(index >= first_t,
                      1 + jnp.floor((i_f - first_t.astype(F32) + F32(0.5)) / step_t.astype(F32)).astype(jnp.int32), 0)
        k = jnp.clip(k, 0, _MAX_SH_CALLS)
        held_t = jnp.take_along_axis(cand, block_of * (_MAX_SH_CALLS + 1) + k, axis=1)
        sh = jnp.where(step_t == 1, noise, held_t)
        return jnp.where(kind[:, None] == NOISE, noise, sh)

    zeros = jnp.zeros_like(nb.r_hi, jnp.int32)
    lfo = source(kinds[0], nb.count_lfo, nb.held_lfo, jnp.broadcast_to(lfo_period[:, None], zeros.shape), zeros)
    osc1 = source(kinds[1], nb.count1, nb.held1, period1, nb.calls_lfo)
    osc2 = source(kinds[2], nb.count2, nb.held2, period2, nb.calls_lfo + nb.calls_osc1)
    return lfo, osc1, osc2
