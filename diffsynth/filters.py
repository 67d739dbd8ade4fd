"""Biquad filters with block-rate (piecewise constant) coefficients.

Pure, synth-agnostic JAX functions: jit/vmap/grad safe, leading batch dims ``...``,
time last. Float32 by default; every function keeps the dtype of its inputs, so the
same code runs in float64 under ``jax.enable_x64(True)`` (used by the tests).

Sections
--------
* Coefficients: RBJ/Zölzer bilinear biquads with prewarping
  (:func:`biquad_coefficients`, :func:`biquad_coefficients_mixture`).
* Time-varying filtering, coefficients held for blocks of ``block_size`` samples,
  transposed direct form II (TDF-II)::

      y[n]  = b0 x[n] + d1
      d1   <- d2 + b1 x[n] - a1 y[n]
      d2   <- b2 x[n] - a2 y[n]

  Two implementations with identical results up to float rounding:

  - :func:`biquad_scan`: a ``lax.scan`` over samples (all sections fused in one scan).
  - :func:`biquad_blocks`: block-parallel. Within a block the filter is LTI, so the
    block's output is its zero-state response plus the zero-input response from the
    block's initial state. Both are computed for all blocks at once by a
    ``block_size``-step recursion vectorised over (batch, blocks); the block-initial
    states come from a short recursion over blocks of 2x2 affine maps
    (sequential ``lax.scan`` or ``lax.associative_scan``).

  :func:`biquad` and :func:`biquad_cascade` dispatch to one of them
  (``method="auto"`` picks per backend, see :data:`DEFAULT_METHOD`).
* A float64 per-sample numpy reference, :func:`biquad_reference`, used by the tests
  and the benchmark.

Naming: ``b*`` is the numerator (feed-forward), ``a*`` the denominator (feedback,
``a0 = 1``). amsynth's source and ``shared/amsynth/README.md`` §6.5 use the opposite
letters (their ``a0, a1, a2`` are our ``b0, b1, b2``; their ``b1, b2`` our ``a1, a2``).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "FILTER_KINDS",
    "DEFAULT_METHOD",
    "BiquadCoefficients",
    "biquad_coefficients",
    "biquad_coefficients_mixture",
    "biquad_scan",
    "biquad_blocks",
    "biquad",
    "biquad_cascade",
    "biquad_reference",
]

FILTER_KINDS: tuple[str, ...] = ("lowpass", "highpass", "bandpass", "notch", "bypass")
"""Filter kinds understood by :func:`biquad_coefficients`, in the order used by
:func:`biquad_coefficients_mixture`. ``bypass`` is the identity expressed with the
shared denominator (numerator = denominator), so it mixes exactly with the others."""

DEFAULT_METHOD: dict[str, str] = {"cpu": "blocks", "gpu": "blocks", "tpu": "blocks"}
"""Implementation chosen by ``method="auto"`` per JAX backend.

Measured on CPU (2 cores, ``benchmarks/dsp.py``): the block-parallel form is 5-40x
faster than the per-sample scan, forward and with gradient, at batch 1..256 and equal
in precision (float32 vs float64 reference). GPU/TPU were not measured; the block form
has far fewer sequential steps (``block_size + n_blocks`` instead of ``n_samples``), so
it is the default there too, with the associative inter-block scan
(:data:`DEFAULT_INTER_BLOCK`)."""

DEFAULT_INTER_BLOCK: dict[str, str] = {"cpu": "scan", "gpu": "associative", "tpu": "associative"}
"""Inter-block state recursion used by :func:`biquad_blocks` per backend."""


class BiquadCoefficients(NamedTuple):
    """Normalised biquad coefficients (``a0 = 1``).

    ``H(z) = (b0 + b1 z^-1 + b2 z^-2) / (1 + a1 z^-1 + a2 z^-2)``.

    Each field is an array of the same (broadcastable) shape. For the time-varying
    filters the last axis indexes control blocks: shape ``[..., n_blocks]``.
    """

    b0: jax.Array
    b1: jax.Array
    b2: jax.Array
    a1: jax.Array
    a2: jax.Array


# ---------------------------------------------------------------------------------------
# Coefficients
# ---------------------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in FILTER_KINDS:
        raise ValueError(
            f"unknown filter kind {kind!r}: expected one of {FILTER_KINDS}; "
            "use biquad_coefficients_mixture for a relaxed (weighted) choice"
        )


def _shared_terms(cutoff_hz, resonance_r, sample_rate):
    cutoff_hz = jnp.asarray(cutoff_hz)
    dtype = jnp.result_type(cutoff_hz, resonance_r, jnp.float32)
    cutoff_hz = cutoff_hz.astype(dtype)
    r = jnp.asarray(resonance_r, dtype)
    w = cutoff_hz / jnp.asarray(sample_rate, dtype)
    k = jnp.tan(jnp.asarray(math.pi, dtype) * w)
    k2 = k * k
    rk = r * k
    inv_bh = 1.0 / (1.0 + rk + k2)
    a1 = 2.0 * (k2 - 1.0) * inv_bh
    a2 = (1.0 - rk + k2) * inv_bh
    return k2, rk, inv_bh, a1, a2


def _numerators(k2, rk, inv_bh, a1, a2) -> dict[str, tuple[jax.Array, jax.Array, jax.Array]]:
    lp = k2 * inv_bh
    hp = inv_bh
    bp = rk * inv_bh
    notch = (1.0 + k2) * inv_bh
    one = jnp.ones_like(a1)
    return {
        "lowpass": (lp, 2.0 * lp, lp),
        "highpass": (hp, -2.0 * hp, hp),
        "bandpass": (bp, jnp.zeros_like(bp), -bp),
        "notch": (notch, a1, notch),
        "bypass": (one, a1, a2),
    }


def biquad_coefficients(
    kind: str, cutoff_hz: jax.Array, resonance_r: jax.Array, sample_rate: float
) -> BiquadCoefficients:
    """RBJ/Zölzer biquad by the bilinear transform with prewarping (amsynth §6.5).

    With ``k = tan(pi * cutoff_hz / sample_rate)`` and ``bh = 1 + r k + k^2``, the
    shared denominator is ``a1 = 2 (k^2 - 1) / bh``, ``a2 = (1 - r k + k^2) / bh`` and
    the numerators are

    ==========  ==================  ===============  ============  ====================
    kind        b0                  b1               b2            analog prototype
    ==========  ==================  ===============  ============  ====================
    lowpass     k^2 / bh            2 b0             b0            1 / (s^2 + r s + 1)
    highpass    1 / bh              -2 / bh          b0            s^2 / (s^2 + r s + 1)
    bandpass    r k / bh            0                -b0           r s / (s^2 + r s + 1)
    notch       (1 + k^2) / bh      a1               b0            (s^2+1) / (s^2+r s+1)
    bypass      1                   a1               a2            1
    ==========  ==================  ===============  ============  ====================

    The analog corner maps exactly to ``cutoff_hz``. Gradients are finite for the whole
    amsynth range: cutoff 10 Hz .. 0.99 * sample_rate / 2 and r >= 0.06 (Q <= 16.7).
    Nothing is clamped here: the caller clamps cutoff to ``(0, sample_rate / 2)``.

    Args:
      kind: one of :data:`FILTER_KINDS`.
      cutoff_hz: cutoff (Hz). Shape ``[...]`` (e.g. ``[..., n_blocks]``).
      resonance_r: damping ``r = 1/Q`` (amsynth: ``max(0.001, 2 (1 - 0.97 n))``,
        Q = 0.5 at r = 2). Shape broadcastable to ``cutoff_hz``.
      sample_rate: sample rate (Hz), a Python number or scalar array.

    Returns:
      :class:`BiquadCoefficients`, each field of the broadcast shape of the inputs.
    """
    _check_kind(kind)
    k2, rk, inv_bh, a1, a2 = _shared_terms(cutoff_hz, resonance_r, sample_rate)
    b0, b1, b2 = _numerators(k2, rk, inv_bh, a1, a2)[kind]
    b0, b1, b2, a1, a2 = jnp.broadcast_arrays(b0, b1, b2, a1, a2)
    return BiquadCoefficients(b0, b1, b2, a1, a2)


def biquad_coefficients_mixture(
    weights: jax.Array,
    cutoff_hz: jax.Array,
    resonance_r: jax.Array,
    sample_rate: float,
    kinds: Sequence[str] = FILTER_KINDS,
) -> BiquadCoefficients:
    """Relaxed filter-kind choice: a weighted mixture of numerators, shared denominator.

    All kinds of :func:`biquad_coefficients` share the denominator ``1 + a1 z^-1 +
    a2 z^-2`` (for a given cutoff and r), so for ONE section

        ``sum_k w_k H_k(z) = (sum_k w_k B_k(z)) / A(z)``

    exactly: filtering with the mixed numerator equals mixing the outputs of the
    individual filters (up to float rounding), at the cost of one filter. With one-hot
    weights it reduces to :func:`biquad_coefficients` of that kind (hard choice).

    This is NOT exact for a cascade of identical sections: two sections with the mixed
    numerator give ``(sum w_k B_k)^2 / A^2``, not ``sum w_k B_k^2 / A^2``. To relax a
    choice among 24 dB filters, mix the *outputs* instead (or stack the kinds along a
    batch axis and filter once, then contract with the weights).

    Args:
      weights: mixture weights, e.g. a softmax. Shape ``[..., len(kinds)]``; the leading
        dims broadcast against ``cutoff_hz``. Not renormalised.
      cutoff_hz: cutoff (Hz). Shape ``[...]``.
      resonance_r: damping ``r = 1/Q``. Shape broadcastable to ``cutoff_hz``.
      sample_rate: sample rate (Hz).
      kinds: the kinds the last axis of ``weights`` refers to (default
        :data:`FILTER_KINDS`: lowpass, highpass, bandpass, notch, bypass).

    Returns:
      :class:`BiquadCoefficients` of the broadcast shape of ``weights[..., 0]``,
      ``cutoff_hz`` and ``resonance_r``.
    """
    kinds = tuple(kinds)
    for kind in kinds:
        _check_kind(kind)
    weights = jnp.asarray(weights)
    if weights.ndim < 1 or weights.shape[-1] != len(kinds):
        raise ValueError(
            f"weights must have a last axis of size len(kinds) = {len(kinds)} ({kinds}); "
            f"got shape {weights.shape}. Fix: pass one weight per kind on the last axis."
        )
    k2, rk, inv_bh, a1, a2 = _shared_terms(cutoff_hz, resonance_r, sample_rate)
    nums = _numerators(k2, rk, inv_bh, a1, a2)
    weights = weights.astype(a1.dtype)
    b = [0.0, 0.0, 0.0]
    for i, kind in enumerate(kinds):
        w = weights[..., i]
        for j in range(3):
            b[j] = b[j] + w * nums[kind][j]
    b0, b1, b2, a1, a2 = jnp.broadcast_arrays(b[0], b[1], b[2], a1, a2)
    return BiquadCoefficients(b0, b1, b2, a1, a2)


# ---------------------------------------------------------------------------------------
# Shape handling
# ---------------------------------------------------------------------------------------


def _prepare(x: jax.Array, coeffs: BiquadCoefficients, block_size: int):
    """Pads x to whole blocks and broadcasts x and coefficients to one batch shape.

    Returns (x [..., n_blocks, block_size], coeffs fields [..., n_blocks], n_samples).
    """
    if not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive int; got {block_size!r}")
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"x must have a time axis (shape [..., n_samples]); got shape {x.shape}")
    n_samples = x.shape[-1]
    n_blocks = -(-n_samples // block_size)
    fields = [jnp.asarray(c) for c in coeffs]
    for name, c in zip(BiquadCoefficients._fields, fields):
        if c.ndim < 1 or c.shape[-1] not in (1, n_blocks):
            raise ValueError(
                f"coefficient {name} must have shape [..., n_blocks] with n_blocks = "
                f"ceil(n_samples / block_size) = ceil({n_samples} / {block_size}) = {n_blocks} "
                f"(or 1 for constant coefficients); got shape {c.shape}. "
                "Fix: compute one coefficient per control block."
            )
    dtype = jnp.result_type(x, *fields, jnp.float32)
    batch = jnp.broadcast_shapes(x.shape[:-1], *(c.shape[:-1] for c in fields))
    fields = [jnp.broadcast_to(c.astype(dtype), batch + (n_blocks,)) for c in fields]
    x = jnp.broadcast_to(x.astype(dtype), batch + (n_samples,))
    pad = n_blocks * block_size - n_samples
    if pad:
        x = jnp.pad(x, [(0, 0)] * len(batch) + [(0, pad)])
    x = x.reshape(batch + (n_blocks, block_size))
    return x, BiquadCoefficients(*fields), n_samples


def _finish(y_blocks: jax.Array, n_samples: int) -> jax.Array:
    y = y_blocks.reshape(y_blocks.shape[:-2] + (-1,))
    return y[..., :n_samples]


def _check_sections(n_sections: int) -> None:
    if not isinstance(n_sections, (int, np.integer)) or n_sections < 1:
        raise ValueError(
            f"n_sections must be a positive int (1 = 12 dB/oct, 2 = 24 dB/oct); got {n_sections!r}"
        )


# ---------------------------------------------------------------------------------------
# (a) per-sample scan
# ---------------------------------------------------------------------------------------


def biquad_scan(
    x: jax.Array,
    coeffs: BiquadCoefficients,
    block_size: int = 64,
    n_sections: int = 1,
    unroll: int = 8,
) -> jax.Array:
    """Time-varying biquad cascade by a per-sample ``lax.scan`` (TDF-II).

    ``n_sections`` identical sections run in series inside one scan (state zero at the
    start). Outer scan over blocks (coefficients), inner scan over the samples of a
    block.

    Args:
      x: input signal. Shape ``[..., n_samples]``.
      coeffs: :class:`BiquadCoefficients`, each field of shape ``[..., n_blocks]``
        with ``n_blocks = ceil(n_samples / block_size)`` (or ``[..., 1]``: constant);
        block ``j`` covers samples ``[j * block_size, (j + 1) * block_size)``.
      block_size: samples per control block (amsynth: 64).
      n_sections: identical sections in series (1 = 12 dB/oct, 2 = 24 dB/oct).
      unroll: unroll factor of the inner scan (speed only).

    Returns:
      Filtered signal, shape ``[..., n_samples]`` (batch dims broadcast with coeffs).
    """
    _check_sections(n_sections)
    xb, c, n_samples = _prepare(x, coeffs, block_size)
    batch = xb.shape[:-2]
    # time-major: [n_blocks, block_size, *batch] and [n_blocks, *batch]
    nb = len(batch)
    xt = jnp.moveaxis(xb, (nb, nb + 1), (0, 1))
    ct = BiquadCoefficients(*(jnp.moveaxis(f, nb, 0) for f in c))
    zeros = jnp.zeros(batch, xt.dtype)
    state0 = tuple((zeros, zeros) for _ in range(n_sections))

    def block_step(state, inputs):
        xk, (b0, b1, b2, a1, a2) = inputs

        def sample_step(st, v):
            new = []
            for d1, d2 in st:
                y = b0 * v + d1
                new.append((d2 + b1 * v - a1 * y, b2 * v - a2 * y))
                v = y
            return tuple(new), v

        return lax.scan(sample_step, state, xk, unroll=unroll)

    _, yt = lax.scan(block_step, state0, (xt, tuple(ct)))
    yb = jnp.moveaxis(yt, (0, 1), (nb, nb + 1))
    return _finish(yb, n_samples)


# ---------------------------------------------------------------------------------------
# (b) block-parallel
# ---------------------------------------------------------------------------------------


def _affine_recursion(m: jax.Array, e: jax.Array, method: str) -> jax.Array:
    """Block-initial states of ``s[j+1] = m[j] @ s[j] + e[j]``, ``s[0] = 0``.

    Args:
      m: ``[n_blocks, *batch, 2, 2]``; e: ``[n_blocks, *batch, 2]``.
    Returns:
      s: ``[n_blocks, *batch, 2]`` with ``s[j]`` the state at the start of block ``j``.
    """
    if method == "scan":

        def step(s, inputs):
            mj, ej = inputs
            s_next = jnp.einsum("...ij,...j->...i", mj, s) + ej
            return s_next, s

        _, s = lax.scan(step, jnp.zeros_like(e[0]), (m, e))
        return s
    if method == "associative":

        def combine(first, second):
            m1, e1 = first
            m2, e2 = second
            return m2 @ m1, jnp.einsum("...ij,...j->...i", m2, e1) + e2

        _, s_end = lax.associative_scan(combine, (m, e), axis=0)
        # state at the start of block j = state at the end of block j - 1
        return jnp.concatenate([jnp.zeros_like(s_end[:1]), s_end[:-1]], axis=0)
    raise ValueError(f"inter_block must be 'scan' or 'associative'; got {method!r}")


def _biquad_blocks_one(xt: jax.Array, c: BiquadCoefficients, inter_block: str, unroll: int):
    """One section. xt: [block_size, n_blocks, *batch]; c fields: [n_blocks, *batch]."""
    b0, b1, b2, a1, a2 = c
    block_size = xt.shape[0]
    zeros = jnp.zeros(xt.shape[1:], xt.dtype)
    ones = jnp.ones(xt.shape[1:], xt.dtype)

    # Pass 1, all blocks at once, block_size sequential steps:
    #   zero-state response z (input x, state 0) and the zero-input response u of the
    #   basis state e1 = (1, 0). The state-transition matrix of TDF-II is
    #   A = [[-a1, 1], [-a2, 0]], so A e2 = e1: the zero-input response of e2 is u
    #   delayed by one sample. Output row: y = d1 (+ b0 x).
    def step(carry, v):
        z1, z2, u1, u2 = carry
        y = b0 * v + z1
        z1n = z2 + b1 * v - a1 * y
        z2n = b2 * v - a2 * y
        u1n = u2 - a1 * u1
        u2n = -a2 * u1
        return (z1n, z2n, u1n, u2n), (y, u1)

    (z1, z2, u1_k, u2_k), (y_zs, u_out) = lax.scan(
        step, (zeros, zeros, ones, zeros), xt, unroll=unroll
    )
    # A^block_size: first column = u state after block_size steps, second column =
    # after block_size - 1 steps (= A^(K-1) e1 = A^K e2).
    u1_km1 = u_out[-1]
    u2_km1 = -a2 * u_out[-2] if block_size > 1 else zeros
    if block_size == 1:
        u1_km1 = ones
    m = jnp.stack(
        [jnp.stack([u1_k, u1_km1], axis=-1), jnp.stack([u2_k, u2_km1], axis=-1)], axis=-2
    )  # [n_blocks, *batch, 2, 2]
    e = jnp.stack([z1, z2], axis=-1)  # [n_blocks, *batch, 2]

    # Pass 2: block-initial states, n_blocks sequential steps (or log depth).
    s = _affine_recursion(m, e, inter_block)  # [n_blocks, *batch, 2]

    # Pass 3: add the zero-input response of each block's initial state.
    v_out = jnp.concatenate([jnp.zeros_like(u_out[:1]), u_out[:-1]], axis=0)
    return y_zs + s[..., 0] * u_out + s[..., 1] * v_out


def biquad_blocks(
    x: jax.Array,
    coeffs: BiquadCoefficients,
    block_size: int = 64,
    n_sections: int = 1,
    inter_block: str = "auto",
    unroll: int = 4,
) -> jax.Array:
    """Time-varying biquad cascade, block-parallel form (same result as :func:`biquad_scan`).

    Inside a block the coefficients are constant, so with state ``s`` (TDF-II
    ``(d1, d2)``) and ``A = [[-a1, 1], [-a2, 0]]``:

        ``y[j, n] = zero_state[j, n] + (A^n s_j)[0]``  and
        ``s_{j+1} = A_j^K s_j + end_state_j``.

    ``zero_state``, ``A^n`` and ``end_state`` are computed for every block in parallel
    by a ``block_size``-step recursion; the block-initial states ``s_j`` by a recursion
    over blocks (``n_blocks`` steps of a 2x2 affine map, or an associative scan). So the
    sequential depth is ``block_size + n_blocks`` instead of ``n_samples``. Sections of
    a cascade are applied one after the other.

    Args:
      x: input signal. Shape ``[..., n_samples]``.
      coeffs: :class:`BiquadCoefficients`, fields ``[..., n_blocks]`` (or ``[..., 1]``),
        ``n_blocks = ceil(n_samples / block_size)``.
      block_size: samples per control block (amsynth: 64).
      n_sections: identical sections in series (1 = 12 dB/oct, 2 = 24 dB/oct).
      inter_block: ``"scan"`` (sequential over blocks), ``"associative"``
        (``lax.associative_scan``, log depth) or ``"auto"`` (per backend,
        :data:`DEFAULT_INTER_BLOCK`).
      unroll: unroll factor of the within-block recursion (speed only).

    Returns:
      Filtered signal, shape ``[..., n_samples]``.
    """
    _check_sections(n_sections)
    if inter_block == "auto":
        inter_block = DEFAULT_INTER_BLOCK.get(jax.default_backend(), "scan")
    if inter_block not in ("scan", "associative"):
        raise ValueError(f"inter_block must be 'auto', 'scan' or 'associative'; got {inter_block!r}")
    xb, c, n_samples = _prepare(x, coeffs, block_size)
    nb = xb.ndim - 2
    # layout [block_size, n_blocks, *batch]: each recursion step reads contiguous rows
    xt = jnp.moveaxis(xb, (nb + 1, nb), (0, 1))
    ct = BiquadCoefficients(*(jnp.moveaxis(f, nb, 0) for f in c))
    for _ in range(n_sections):
        xt = _biquad_blocks_one(xt, ct, inter_block, unroll)
    yb = jnp.moveaxis(xt, (0, 1), (nb + 1, nb))
    return _finish(yb, n_samples)


# ---------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------


def _resolve_method(method: str) -> str:
    if method == "auto":
        return DEFAULT_METHOD.get(jax.default_backend(), "blocks")
    if method not in ("scan", "blocks"):
        raise ValueError(f"method must be 'auto', 'scan' or 'blocks'; got {method!r}")
    return method


def biquad_cascade(
    x: jax.Array,
    coeffs: BiquadCoefficients,
    n_sections: int,
    block_size: int = 64,
    method: str = "auto",
) -> jax.Array:
    """``n_sections`` identical time-varying biquads in series (amsynth 24 dB = 2).

    Args:
      x: input signal. Shape ``[..., n_samples]``.
      coeffs: :class:`BiquadCoefficients`, fields ``[..., n_blocks]`` (or ``[..., 1]``).
      n_sections: 1 (12 dB/oct) or 2 (24 dB/oct), or more.
      block_size: samples per control block (amsynth: 64).
      method: ``"scan"`` (:func:`biquad_scan`), ``"blocks"`` (:func:`biquad_blocks`)
        or ``"auto"`` (per backend, :data:`DEFAULT_METHOD`).

    Returns:
      Filtered signal, shape ``[..., n_samples]``.
    """
    if _resolve_method(method) == "scan":
        return biquad_scan(x, coeffs, block_size=block_size, n_sections=n_sections)
    return biquad_blocks(x, coeffs, block_size=block_size, n_sections=n_sections)


def biquad(
    x: jax.Array, coeffs: BiquadCoefficients, block_size: int = 64, method: str = "auto"
) -> jax.Array:
    """One time-varying biquad section (12 dB/oct); see :func:`biquad_cascade`.

    Args:
      x: input signal. Shape ``[..., n_samples]``.
      coeffs: :class:`BiquadCoefficients`, fields ``[..., n_blocks]`` (or ``[..., 1]``).
      block_size: samples per control block (amsynth: 64).
      method: ``"scan"``, ``"blocks"`` or ``"auto"``.

    Returns:
      Filtered signal, shape ``[..., n_samples]``.
    """
    return biquad_cascade(x, coeffs, 1, block_size=block_size, method=method)


# ---------------------------------------------------------------------------------------
# float64 reference
# ---------------------------------------------------------------------------------------


def biquad_reference(
    x: np.ndarray, coeffs: BiquadCoefficients, block_size: int = 64, n_sections: int = 1
) -> np.ndarray:
    """Per-sample float64 numpy reference (TDF-II, amsynth's arithmetic). Slow: tests only.

    Args:
      x: input, shape ``[n_samples]`` (1-D only).
      coeffs: fields of shape ``[n_blocks]`` (or ``[1]``), any float dtype.
      block_size: samples per control block.
      n_sections: identical sections in series.

    Returns:
      float64 array ``[n_samples]``.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 1:
        raise ValueError(f"biquad_reference takes a 1-D signal; got shape {x.shape}")
    n_blocks = -(-x.shape[0] // block_size)
    c = [np.broadcast_to(np.asarray(f, np.float64).reshape(-1), (n_blocks,)) for f in coeffs]
    b0, b1, b2, a1, a2 = (f.tolist() for f in c)
    y = x.tolist()
    for _ in range(n_sections):
        d1 = d2 = 0.0
        out = []
        for n, v in enumerate(y):
            j = n // block_size
            o = b0[j] * v + d1
            d1 = d2 + b1[j] * v - a1[j] * o
            d2 = b2[j] * v - a2[j] * o
            out.append(o)
        y = out
    return np.asarray(y, np.float64)
