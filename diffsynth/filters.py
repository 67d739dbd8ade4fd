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

  evaluated in the state coordinates ``(d1, d1 + d2)`` with float32-accurate
  coefficients (see :class:`BiquadCoefficients`: same system, ~60 dB better SNR than
  plain float32 TDF-II at low cutoff and high Q). Two implementations with identical
  results up to float rounding:

  - :func:`biquad_scan`: a ``lax.scan`` over samples (all sections fused in one scan),
    differentiated by JAX's autodiff.
  - :func:`biquad_blocks`: block-parallel. Within a block the filter is LTI, so the
    block's output is its zero-state response plus the zero-input response from the
    block's initial state. The block-end states and state-transition matrices are
    computed for all blocks at once by a ``block_size``-step recursion vectorised over
    (batch, blocks); the block-initial states come from a short recursion over blocks
    of 2x2 affine maps (sequential ``lax.scan`` or ``lax.associative_scan``); a last
    vectorised pass runs every block from its initial state. Its gradient is a custom
    VJP: the adjoint (transposed) filter run backwards in time with the same passes.

  :func:`biquad` and :func:`biquad_cascade` dispatch to one of them
  (``method="auto"`` picks per backend, see :data:`DEFAULT_METHOD`).
* A float64 per-sample numpy reference, :func:`biquad_reference`, used by the tests
  and the benchmark.

Naming: ``b*`` is the numerator (feed-forward), ``a*`` the denominator (feedback,
``a0 = 1``). amsynth's source and ``shared/amsynth/README.md`` §6.5 use the opposite
letters (their ``a0, a1, a2`` are our ``b0, b1, b2``; their ``b1, b2`` our ``a1, a2``).
"""

from __future__ import annotations

import functools
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

CPU (measured, ``benchmarks/dsp.py``, LP24, 1.5 s, 2 shared cores): the block form
(batch-chunked) is 1.5-3x faster forward at 44.1 kHz for batch 1..256 and 3-10x faster
with gradient at batch 1; at batch 64 the gradients are about equal, and at 16 kHz,
batch 64 the scan is up to ~1.5x faster. Precision vs float64: blocks better for
low cutoffs (LP24 Q 16.7 at 10 Hz: 106 vs 84 dB; 50 Hz: 110 vs 106 dB), scan better
near Nyquist at high Q (47 vs 39 dB at 0.99 Nyquist). GPU/TPU were not measured; the
block form has far fewer sequential steps (``2 block_size + n_blocks`` instead of
``n_samples``), so it is the default there too."""

DEFAULT_INTER_BLOCK: dict[str, str] = {"cpu": "scan", "gpu": "scan", "tpu": "scan"}
"""Inter-block state recursion used by :func:`biquad_blocks` per backend. The
sequential scan over blocks is the most precise; ``"associative"`` (log depth) loses
precision for poles near the unit circle (LP24 Q 16.7 at 0.99 Nyquist: 23 dB SNR vs
39 dB; 50 Hz: 104 vs 110 dB) and may pay off on accelerators (not measured)."""


class BiquadCoefficients(NamedTuple):
    """Biquad coefficients in a float32-accurate "delta" form (``a0 = 1``).

    ``H(z) = (b0 + b1 z^-1 + b2 z^-2) / (1 + a1 z^-1 + a2 z^-2)`` is stored as

    ======  =================  ===========================================
    field   value              meaning
    ======  =================  ===========================================
    b0      b0                 numerator, z^0
    b01     b0 + b1
    b012    b0 + b1 + b2       numerator at DC, ``B(1)``
    a1p2    a1 + 2
    a012    1 + a1 + a2        denominator at DC, ``A(1)``
    ======  =================  ===========================================

    Why: for low cutoffs and high Q the poles sit near ``z = 1``, where ``a1 ~ -2`` and
    ``a2 ~ 1``; float32 ``a1, a2`` then lose most of the information (an LP24 at 50 Hz,
    Q 16.7, 44.1 kHz has only 42 dB SNR against float64 from coefficient rounding
    alone). The small quantities above are computed directly from ``k`` and ``r``
    without cancellation, and the filters run TDF-II in the state coordinates
    ``(p, q) = (d1, d1 + d2)``, where the update uses only them::

        y = b0 x + p;   p <- y + q + b01 x - a1p2 y;   q <- q + b012 x - a012 y

    This is the same state-space system as amsynth's TDF-II (same state, up to a fixed
    integer change of coordinates, so identical behaviour when coefficients jump at block
    boundaries); only the float rounding differs (~106 dB SNR vs float64 for that LP24).

    The direct coefficients are available as properties ``b1, b2, a1, a2`` and
    :meth:`direct`; :meth:`from_direct` builds the delta form from arbitrary direct
    coefficients (without the precision benefit). Each field is an array of the same
    (broadcastable) shape; for the time-varying filters the last axis indexes control
    blocks: ``[..., n_blocks]``.
    """

    b0: jax.Array
    b01: jax.Array
    b012: jax.Array
    a1p2: jax.Array
    a012: jax.Array

    @property
    def b1(self) -> jax.Array:
        return self.b01 - self.b0

    @property
    def b2(self) -> jax.Array:
        return self.b012 - self.b01

    @property
    def a1(self) -> jax.Array:
        return self.a1p2 - 2.0

    @property
    def a2(self) -> jax.Array:
        return self.a012 - self.a1p2 + 1.0

    def direct(self) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
        """Direct-form coefficients ``(b0, b1, b2, a1, a2)``."""
        return self.b0, self.b1, self.b2, self.a1, self.a2

    @classmethod
    def from_direct(cls, b0, b1, b2, a1, a2) -> "BiquadCoefficients":
        """Delta form from direct-form coefficients (``a0 = 1``), e.g. from scipy."""
        return cls(b0, b0 + b1, b0 + b1 + b2, a1 + 2.0, 1.0 + a1 + a2)


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
    """k^2, r k, 1/bh and the delta-form denominator (a1 + 2, 1 + a1 + a2)."""
    cutoff_hz = jnp.asarray(cutoff_hz)
    dtype = jnp.result_type(cutoff_hz, resonance_r, jnp.float32)
    r = jnp.asarray(resonance_r, dtype)
    w = cutoff_hz.astype(dtype) / jnp.asarray(sample_rate, dtype)
    k = jnp.tan(jnp.asarray(math.pi, dtype) * w)
    k2 = k * k
    rk = r * k
    inv_bh = 1.0 / (1.0 + rk + k2)
    a1p2 = 2.0 * (2.0 * k2 + rk) * inv_bh  # a1 + 2, a1 = 2 (k^2 - 1) / bh
    a012 = 4.0 * k2 * inv_bh  # 1 + a1 + a2, a2 = (1 - r k + k^2) / bh
    return k2, rk, inv_bh, a1p2, a012


def _numerators(k2, rk, inv_bh, a1p2, a012) -> dict[str, tuple[jax.Array, jax.Array, jax.Array]]:
    """(b0, b0 + b1, b0 + b1 + b2) per kind, each without cancellation."""
    lp = k2 * inv_bh
    hp = inv_bh
    bp = rk * inv_bh
    notch = (1.0 + k2) * inv_bh
    return {
        "lowpass": (lp, 3.0 * lp, a012),  # b = k^2/bh (1, 2, 1)
        "highpass": (hp, -hp, jnp.zeros_like(hp)),  # b = 1/bh (1, -2, 1)
        "bandpass": (bp, bp, jnp.zeros_like(bp)),  # b = r k/bh (1, 0, -1)
        "notch": (notch, (3.0 * k2 - 1.0) * inv_bh, a012),  # b = ((1+k^2), 2(k^2-1), (1+k^2))/bh
        "bypass": (jnp.ones_like(a1p2), a1p2 - 1.0, a012),  # b = a = (1, a1, a2)
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
      :class:`BiquadCoefficients` (delta form; ``.direct()`` gives
      ``(b0, b1, b2, a1, a2)``), each field of the broadcast shape of the inputs.
    """
    _check_kind(kind)
    k2, rk, inv_bh, a1p2, a012 = _shared_terms(cutoff_hz, resonance_r, sample_rate)
    b0, b01, b012 = _numerators(k2, rk, inv_bh, a1p2, a012)[kind]
    return BiquadCoefficients(*jnp.broadcast_arrays(b0, b01, b012, a1p2, a012))


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
    k2, rk, inv_bh, a1p2, a012 = _shared_terms(cutoff_hz, resonance_r, sample_rate)
    nums = _numerators(k2, rk, inv_bh, a1p2, a012)
    weights = weights.astype(a1p2.dtype)
    b = [0.0, 0.0, 0.0]
    for i, kind in enumerate(kinds):
        w = weights[..., i]
        for j in range(3):  # (b0, b0 + b1, b0 + b1 + b2) are linear in the numerator
            b[j] = b[j] + w * nums[kind][j]
    return BiquadCoefficients(*jnp.broadcast_arrays(b[0], b[1], b[2], a1p2, a012))


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
    unroll: int = 1,
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
        xk, (b0, b01, b012, a1p2, a012) = inputs

        def sample_step(st, v):
            new = []
            for p, q in st:  # (p, q) = (d1, d1 + d2), see BiquadCoefficients
                y = b0 * v + p
                new.append((y + q + b01 * v - a1p2 * y, q + b012 * v - a012 * y))
                v = y
            return tuple(new), v

        return lax.scan(sample_step, state, xk, unroll=unroll)

    _, yt = lax.scan(block_step, state0, (xt, tuple(ct)))
    yb = jnp.moveaxis(yt, (0, 1), (nb, nb + 1))
    return _finish(yb, n_samples)


# ---------------------------------------------------------------------------------------
# (b) block-parallel
# ---------------------------------------------------------------------------------------


def _affine_recursion(d: jax.Array, e: jax.Array, method: str) -> jax.Array:
    """Block-initial states of ``s[j+1] = (I + d[j]) @ s[j] + e[j]``, ``s[0] = 0``.

    The transition matrix is passed as its difference from the identity, ``d = M - I``,
    which is small for low cutoffs; keeping it apart from ``I`` keeps its precision in
    float32 (and in the associative combination ``(I + d2)(I + d1) = I + d1 + d2 + d2 d1``).

    Args:
      d: ``[n_blocks, *batch, 2, 2]``; e: ``[n_blocks, *batch, 2]``.
    Returns:
      s: ``[n_blocks, *batch, 2]`` with ``s[j]`` the state at the start of block ``j``.
    """

    def apply(dm, v):
        return jnp.einsum("...ij,...j->...i", dm, v)

    if method == "scan":

        def step(s, inputs):
            dj, ej = inputs
            return s + (apply(dj, s) + ej), s

        _, s = lax.scan(step, jnp.zeros_like(e[0]), (d, e))
        return s
    if method == "associative":

        def combine(first, second):
            d1, e1 = first
            d2, e2 = second
            return d1 + d2 + d2 @ d1, e2 + (e1 + apply(d2, e1))

        _, s_end = lax.associative_scan(combine, (d, e), axis=0)
        # state at the start of block j = state at the end of block j - 1
        return jnp.concatenate([jnp.zeros_like(s_end[:1]), s_end[:-1]], axis=0)
    raise ValueError(f"inter_block must be 'scan' or 'associative'; got {method!r}")


# Layout of the block-parallel passes: signals [n_chunks, block_size, n_blocks, rows],
# coefficient fields [n_chunks, n_blocks, rows]. The within-block passes (1 and 3) run
# chunk after chunk (lax.map; one chunk's arrays stay in cache), the recursion over
# blocks (pass 2) once for all rows.


def _map_chunks(fn, *args):
    """fn over the leading (chunk) axis; a plain call when there is one chunk."""
    if jax.tree_util.tree_leaves(args)[0].shape[0] == 1:
        out = fn(*jax.tree_util.tree_map(lambda a: a[0], args))
        return jax.tree_util.tree_map(lambda a: a[None], out)
    return lax.map(lambda a: fn(*a), args)


def _across_chunks(fn, d: jax.Array, e: jax.Array) -> jax.Array:
    """Runs fn(d [n_blocks, R, 2, 2], e [n_blocks, R, 2]) with all chunks' rows together.

    d: [C, n_blocks, r, 2, 2]; e: [C, n_blocks, r, 2] -> result [C, n_blocks, r, 2].
    """
    n_chunks, n_blocks, r = e.shape[:3]
    d = jnp.moveaxis(d, 0, 1).reshape((n_blocks, n_chunks * r, 2, 2))
    e = jnp.moveaxis(e, 0, 1).reshape((n_blocks, n_chunks * r, 2))
    s = fn(d, e)
    return jnp.moveaxis(s.reshape((n_blocks, n_chunks, r, 2)), 1, 0)


def _forward_pass1(xt: jax.Array, c: BiquadCoefficients, unroll: int):
    """xt [K, n_blocks, r] -> (A^K - I [n_blocks, r, 2, 2], zero-state end [n_blocks, r, 2]).

    All blocks at once, block_size sequential steps, in the state coordinates
    (p, q) = (d1, d1 + d2) of BiquadCoefficients. A^K - I comes from the zero-input
    runs of the basis states (1, 0) and (0, 1) (zero-input map p <- p + q - a1p2 p,
    q <- q - a012 p), which keep their "1" apart (u = (1 + du, uq), v = (vp, 1 + dv)) so
    that A^n - I stays accurate for low cutoffs.
    """
    b0, b01, b012, a1p2, a012 = c
    zeros = jnp.zeros(xt.shape[1:], xt.dtype)

    def step(carry, xk):
        zp, zq, du, uq, vp, dv = carry
        y = b0 * xk + zp
        up = 1.0 + du
        carry = (
            y + zq + b01 * xk - a1p2 * y,
            zq + b012 * xk - a012 * y,
            du + (uq - a1p2 * up),
            uq - a012 * up,
            vp + (1.0 + dv) - a1p2 * vp,
            dv - a012 * vp,
        )
        return carry, None

    (zp, zq, du, uq, vp, dv), _ = lax.scan(step, (zeros,) * 6, xt, unroll=unroll)
    d = jnp.stack([jnp.stack([du, vp], axis=-1), jnp.stack([uq, dv], axis=-1)], axis=-2)
    return d, jnp.stack([zp, zq], axis=-1)


def _forward_pass3(xt: jax.Array, c: BiquadCoefficients, s: jax.Array, unroll: int):
    """Every block from its initial state s [n_blocks, r, 2] -> y [K, n_blocks, r]."""
    b0, b01, b012, a1p2, a012 = c

    def step(carry, xk):
        p, q = carry
        y = b0 * xk + p
        return (y + q + b01 * xk - a1p2 * y, q + b012 * xk - a012 * y), y

    _, y = lax.scan(step, (s[..., 0], s[..., 1]), xt, unroll=unroll)
    return y


def _biquad_blocks_one(xt: jax.Array, c: BiquadCoefficients, inter_block: str, unroll: int):
    """One section, forward. xt: [C, K, n_blocks, r]; c fields: [C, n_blocks, r]."""
    d, e = _map_chunks(lambda x, cc: _forward_pass1(x, cc, unroll), xt, c)
    s = _across_chunks(lambda d, e: _affine_recursion(d, e, inter_block), d, e)
    return _map_chunks(lambda x, cc, ss: _forward_pass3(x, cc, ss, unroll), xt, c, s)


def _adjoint_pass1(gt: jax.Array, c: BiquadCoefficients, unroll: int):
    """Reverse in time: zero-state adjoint at each block's start and (A^T)^K - I."""
    _, _, _, a1p2, a012 = c
    zeros = jnp.zeros(gt.shape[1:], gt.dtype)

    def step(carry, gk):
        zp, zq, du, uq, vp, dv = carry
        up = 1.0 + du
        vq = 1.0 + dv
        carry = (
            gk + zp - (a1p2 * zp + a012 * zq),
            zp + zq,
            du - (a1p2 * up + a012 * uq),
            uq + up,
            vp - (a1p2 * vp + a012 * vq),
            dv + vp,
        )
        return carry, None

    (zp, zq, du, uq, vp, dv), _ = lax.scan(step, (zeros,) * 6, gt, reverse=True, unroll=unroll)
    d = jnp.stack([jnp.stack([du, vp], axis=-1), jnp.stack([uq, dv], axis=-1)], axis=-2)
    return d, jnp.stack([zp, zq], axis=-1)


def _adjoint_pass3(gt, xt, yt, c: BiquadCoefficients, lam_end: jax.Array, unroll: int):
    """Reverse in time from each block's end adjoint: dx [K, n_blocks, r] and the
    per-block coefficient cotangents (5 x [n_blocks, r])."""
    b0, b01, b012, a1p2, a012 = c
    zeros = jnp.zeros(gt.shape[1:], gt.dtype)

    def step(carry, inputs):
        lp, lq, s0, s1, s2, s3, s4 = carry
        gk, xk, yk = inputs
        lp_n = gk + lp - (a1p2 * lp + a012 * lq)
        lq_n = lp + lq
        dx = b0 * lp_n + b01 * lp + b012 * lq
        carry = (lp_n, lq_n, s0 + lp_n * xk, s1 + lp * xk, s2 + lq * xk, s3 - lp * yk,
                 s4 - lq * yk)
        return carry, dx

    init = (lam_end[..., 0], lam_end[..., 1]) + (zeros,) * 5
    carry, dx = lax.scan(step, init, (gt, xt, yt), reverse=True, unroll=unroll)
    return dx, BiquadCoefficients(*carry[2:])


def _adjoint_blocks_one(
    gt: jax.Array, xt: jax.Array, yt: jax.Array, c: BiquadCoefficients, inter_block: str,
    unroll: int,
) -> tuple[jax.Array, BiquadCoefficients]:
    """Reverse-mode derivative of one section, block-parallel like the forward pass.

    With forward state ``s_n = (p_n, q_n)`` and adjoint ``lam_n = dL/ds_n``, the adjoint
    runs backwards in time through the transposed system (``lam_N = 0``)::

        lp_n = g_n + lp_{n+1} - (a1p2 lp_{n+1} + a012 lq_{n+1})     (= dL/dy_n, total)
        lq_n = lp_{n+1} + lq_{n+1}
        dx_n = b0 lp_n + b01 lp_{n+1} + b012 lq_{n+1}

    and the block-coefficient gradients are sums over the block's samples of
    ``lp_n x_n``, ``lp_{n+1} x_n``, ``lq_{n+1} x_n``, ``-lp_{n+1} y_n``, ``-lq_{n+1} y_n``
    (for b0, b01, b012, a1p2, a012). The backward recursion uses the same three passes
    as the forward one, in reverse block and sample order.

    Args:
      gt: cotangent of the output, ``[C, block_size, n_blocks, r]``.
      xt, yt: the section's input and output, same layout.
      c: coefficient fields ``[C, n_blocks, r]``.
    Returns:
      (cotangent of xt, cotangents of the coefficient fields).
    """
    d, e = _map_chunks(lambda g, cc: _adjoint_pass1(g, cc, unroll), gt, c)

    def reverse_recursion(d, e):  # adjoint entering each block from its end
        return _affine_recursion(d[::-1], e[::-1], inter_block)[::-1]

    lam_end = _across_chunks(reverse_recursion, d, e)
    return _map_chunks(lambda g, x, y, cc, lam: _adjoint_pass3(g, x, y, cc, lam, unroll),
                       gt, xt, yt, c, lam_end)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _blocks_section(xt: jax.Array, c: BiquadCoefficients, inter_block: str, unroll: int):
    return _biquad_blocks_one(xt, c, inter_block, unroll)


def _blocks_section_fwd(xt, c, inter_block, unroll):
    yt = _biquad_blocks_one(xt, c, inter_block, unroll)
    return yt, (xt, yt, c)


def _blocks_section_bwd(inter_block, unroll, res, gt):
    xt, yt, c = res
    return _adjoint_blocks_one(gt, xt, yt, c, inter_block, unroll)


_blocks_section.defvjp(_blocks_section_fwd, _blocks_section_bwd)


def _auto_chunk(rows: int, n_blocks: int) -> int:
    """Batch rows per chunk so one chunk's recursion arrays stay in cache (CPU)."""
    target = max(1, _CHUNK_ELEMENTS // max(1, n_blocks))
    n_chunks = -(-rows // target)
    return -(-rows // n_chunks)  # balanced: as little padding as possible


_CHUNK_ELEMENTS = 4096
"""Target ``rows x n_blocks`` per chunk for ``batch_chunk="auto"`` on CPU."""


def biquad_blocks(
    x: jax.Array,
    coeffs: BiquadCoefficients,
    block_size: int = 64,
    n_sections: int = 1,
    inter_block: str = "auto",
    unroll: int = 1,
    batch_chunk: int | str = "auto",
) -> jax.Array:
    """Time-varying biquad cascade, block-parallel form (same result as :func:`biquad_scan`).

    Inside a block the coefficients are constant, so with state ``s`` and state
    transition matrix ``A``:

        ``y[j, n] = zero_state[j, n] + (A_j^n s_j)[0]``  and
        ``s_{j+1} = A_j^K s_j + end_state_j``

    (computed in the well-conditioned state coordinates of :class:`BiquadCoefficients`).

    Pass 1 computes ``A_j^K`` and ``end_state_j`` for every block in parallel by a
    ``block_size``-step recursion; pass 2 the block-initial states ``s_j`` by a
    recursion over blocks (``n_blocks`` steps of a 2x2 affine map, or an associative
    scan); pass 3 runs the filter inside every block from ``s_j``, again all blocks in
    parallel. So the sequential depth is ``2 block_size + n_blocks`` instead of
    ``n_samples``, and no ``[..., n_samples]`` intermediate other than the output is
    stored. Sections of a cascade are applied one after the other.

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
      batch_chunk: run the within-block passes 1 and 3 on chunks of this many (flattened)
        batch rows, one after the other (``lax.map``), so that each chunk's working set
        stays in cache (pass 2 always runs on all rows at once); ``"auto"``: about 4096
        ``rows x n_blocks`` per chunk on CPU, no chunking on other backends; ``None`` or
        0: no chunking. Speed only.

    Gradients: a custom VJP runs the adjoint (transposed) filter backwards in time with
    the same block-parallel passes, storing only the input and output of each section
    (no per-step residuals). Forward-mode differentiation (``jax.jvp``, ``jacfwd``) is
    therefore not available for this implementation; use :func:`biquad_scan` for it.

    Returns:
      Filtered signal, shape ``[..., n_samples]``.
    """
    _check_sections(n_sections)
    if inter_block == "auto":
        inter_block = DEFAULT_INTER_BLOCK.get(jax.default_backend(), "scan")
    if inter_block not in ("scan", "associative"):
        raise ValueError(f"inter_block must be 'auto', 'scan' or 'associative'; got {inter_block!r}")
    xb, c, n_samples = _prepare(x, coeffs, block_size)
    batch, n_blocks = xb.shape[:-2], xb.shape[-2]
    rows = math.prod(batch)
    xb = xb.reshape((rows, n_blocks, block_size))
    c = BiquadCoefficients(*(f.reshape((rows, n_blocks)) for f in c))
    if batch_chunk == "auto":
        batch_chunk = _auto_chunk(rows, n_blocks) if jax.default_backend() == "cpu" else 0
    chunk = int(batch_chunk) if batch_chunk and rows > batch_chunk else rows
    n_chunks = -(-rows // chunk)
    pad = n_chunks * chunk - rows
    if pad:
        xb = jnp.pad(xb, ((0, pad), (0, 0), (0, 0)))
        c = BiquadCoefficients(*(jnp.pad(f, ((0, pad), (0, 0)), mode="edge") for f in c))
    # layout [C, K, n_blocks, r]: each recursion step reads contiguous rows
    xt = jnp.transpose(xb.reshape((n_chunks, chunk, n_blocks, block_size)), (0, 3, 2, 1))
    ct = BiquadCoefficients(*(jnp.transpose(f.reshape((n_chunks, chunk, n_blocks)), (0, 2, 1))
                              for f in c))
    for _ in range(n_sections):
        xt = _blocks_section(xt, ct, inter_block, unroll)
    yb = jnp.transpose(xt, (0, 3, 2, 1)).reshape((n_chunks * chunk, n_blocks, block_size))
    return _finish(yb[:rows].reshape(batch + (n_blocks, block_size)), n_samples)


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
    """Per-sample float64 numpy reference: amsynth's arithmetic (direct-form TDF-II,
    float64 state and coefficients). Slow: tests and benchmarks only.

    Args:
      x: input, shape ``[n_samples]`` (1-D only).
      coeffs: :class:`BiquadCoefficients`, fields of shape ``[n_blocks]`` (or ``[1]``),
        any float dtype; converted to direct form in float64.
      block_size: samples per control block.
      n_sections: identical sections in series.

    Returns:
      float64 array ``[n_samples]``.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 1:
        raise ValueError(f"biquad_reference takes a 1-D signal; got shape {x.shape}")
    n_blocks = -(-x.shape[0] // block_size)
    c = BiquadCoefficients(
        *(np.broadcast_to(np.asarray(f, np.float64).reshape(-1), (n_blocks,)) for f in coeffs)
    )
    b0, b1, b2, a1, a2 = (np.asarray(f).tolist() for f in c.direct())
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
