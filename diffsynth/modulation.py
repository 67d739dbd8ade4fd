"""Modulation sources and smoothers: LFO waveforms, one-pole low-pass, parameter smoother.

Pure, synth-agnostic JAX functions: jit/vmap/grad safe, leading batch dims ``...``,
time last. An LFO is an oscillator at a low rate, so its waveforms are built from
:mod:`diffsynth.oscillators` on a phase from
:func:`diffsynth.oscillators.phase_from_frequency` (cycles, increment before output).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from diffsynth.control import blocked_prefix_scan, strict_round
from diffsynth.oscillators import box_pulse, sample_and_hold, saw_triangle, sine, white_noise

__all__ = [
    "LFO_WAVEFORMS",
    "lfo_waveforms",
    "one_pole_lowpass",
    "one_pole_coefficient",
    "parameter_smoother",
    "ONE_POLE_DEFAULT_METHOD",
]

Array = jax.Array

#: Names of the rows of :func:`lfo_waveforms`, in order.
LFO_WAVEFORMS = ("sine", "square", "triangle", "noise", "sample_hold", "saw_up", "saw_down")

#: Default for :func:`one_pole_lowpass` ``method``: ``"auto"`` picks ``"scan"`` for at
#: most 65 536 samples and 2^20 elements in all, else ``"associative"`` (measurements in
#: :func:`one_pole_lowpass`).
ONE_POLE_DEFAULT_METHOD = "auto"


def _as_float(x) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


# ---------------------------------------------------------------------------------------
# LFO
# ---------------------------------------------------------------------------------------


def lfo_waveforms(phase, phase_increment, key: Array, sample_hold_period, *, triangle_shape=0.0,
                  saw_shape=1.0, triangle_polarity=1.0, sample_hold_first=0,
                  sample_hold_initial=0.0) -> Array:
    """All LFO waveforms on one phase, stacked in the order of :data:`LFO_WAVEFORMS`.

    * ``sine``: ``sin(2 pi phase)``, starts at 0 and rises.
    * ``square``: :func:`box_pulse` with 50% duty, +1 for the first half-cycle.
    * ``triangle``: :func:`saw_triangle` with ``triangle_shape`` (0: 0 -> +1 at 1/4
      -> -1 at 3/4 -> 0), times ``triangle_polarity``.
    * ``noise``: white noise in ``[-1, 1)``, a new value every sample.
    * ``sample_hold``: another white-noise stream held by :func:`sample_and_hold`.
    * ``saw_up`` / ``saw_down``: :func:`saw_triangle` with ``saw_shape`` (1: 0 -> +1 over
      the first half, jump to -1, -> 0), and its negation.

    amsynth (README §6.1): shapes are clamped by the caller to ``0 - 2f/sr`` (triangle)
    and ``1 - 2f/sr`` (saws); the triangle's polarity is sticky (-1 after JUCE's program
    scan); the S&H period is ``int(sr/f) + 1``. A relaxed (differentiable) waveform
    choice is a weighted sum over the first axis of the result.

    Args:
      phase: LFO phase (cycles), shape ``(..., n)``.
      phase_increment: cycles/sample, broadcastable to ``phase``.
      key: PRNG key for the two noise streams.
      sample_hold_period: S&H period (samples, int >= 1), scalar or ``(...)``.
      triangle_shape, saw_shape: :func:`saw_triangle` shapes, broadcastable to ``phase``.
      triangle_polarity: +1 or -1 (or any gain), broadcastable to ``(..., 1)``.
      sample_hold_first, sample_hold_initial: see :func:`sample_and_hold`.
    Returns:
      Shape ``(..., 7, n)``.
    """
    p = _as_float(phase)
    k_noise, k_sh = jax.random.split(key)
    sq = box_pulse(p, phase_increment, 0.5)
    tri = saw_triangle(p, triangle_shape) * jnp.asarray(triangle_polarity, p.dtype)
    saw = saw_triangle(p, saw_shape)
    noise = white_noise(k_noise, p.shape, p.dtype)
    sh = sample_and_hold(white_noise(k_sh, p.shape, p.dtype), sample_hold_period,
                         sample_hold_first, sample_hold_initial)
    rows = [sine(p), sq, tri, noise, sh, saw, -saw]
    rows = [jnp.broadcast_to(r, jnp.broadcast_shapes(*(x.shape for x in rows))) for r in rows]
    return jnp.stack(rows, axis=-2)


# ---------------------------------------------------------------------------------------
# One-pole smoothing
# ---------------------------------------------------------------------------------------


def one_pole_coefficient(time_constant_s, sample_rate: float) -> Array:
    """Pole ``p = exp(-1/(tau*sr))`` of a one-pole with time constant ``tau`` (s)."""
    tau = _as_float(time_constant_s)
    return jnp.exp(-1.0 / (tau * float(sample_rate)))


def _one_pole_scan(x: Array, p: Array, initial: Array, unroll: int) -> Array:
    xs = jnp.moveaxis(x, -1, 0)
    ps = jnp.moveaxis(p, -1, 0)

    def body(y, xp):
        xn, pn = xp
        # Two rounded products then a sum, as C without FMA computes (1-p)x + p*y.
        y = strict_round((1.0 - pn) * xn) + strict_round(pn * y)
        return y, y

    _, ys = lax.scan(body, initial, (xs, ps), unroll=unroll)
    return jnp.moveaxis(ys, 0, -1)


def _one_pole_terms(x: Array, p: Array, initial: Array) -> tuple[Array, Array]:
    """``y[n] = p[n] y[n-1] + (1 - p[n]) x[n]`` as affine maps ``(p, b)`` with ``initial`` folded in."""
    b = (1.0 - p) * x
    return p, b.at[..., 0].add(p[..., 0] * initial)


def _compose_affine(left, right):
    """The affine map ``left`` followed by ``right`` (each ``(a, b)``: ``y -> a y + b``)."""
    a1, b1 = left
    a2, b2 = right
    return a1 * a2, a2 * b1 + b2


def _one_pole_associative(x: Array, p: Array, initial: Array) -> Array:
    _, y = lax.associative_scan(_compose_affine, _one_pole_terms(x, p, initial), axis=-1)
    return y


def _one_pole_blocked(x: Array, p: Array, initial: Array) -> Array:
    _, y = blocked_prefix_scan(_compose_affine, _one_pole_terms(x, p, initial), (1.0, 0.0))
    return y


def one_pole_lowpass(x, coeff, initial=0.0, method: str | None = None, unroll: int = 1) -> Array:
    """One-pole low-pass ``y[n] = (1 - p[n]) x[n] + p[n] y[n-1]``, ``y[-1] = initial``.

    Same recursion as amsynth's ``IIRFilterFirstOrder`` low-pass (``y = a0 x + z;
    z = b1 y``, VCA de-click, README §5) with ``p = b1``, ``1 - p = a0``.

    ``method``: ``"scan"`` (sequential ``lax.scan``, float ops in C order: bit-exact vs a
    float32 C loop without FMA), ``"associative"`` (``lax.associative_scan`` of affine
    maps: log depth, differs by ~2e-7 relative, compiles in ~2-3 s), ``"blocked"``
    (:func:`diffsynth.control.blocked_prefix_scan`: compiles in ~1 s, slower to run) or
    ``"auto"``. Measured (jit, float32, 2 busy shared CPU cores, median ms,
    scan / associative / blocked), batch x samples: 1x4096 0.03/0.08/0.07,
    8x4096 0.05/0.12/0.21, 64x4096 0.71/1.1/5.3, 256x4096 7.3/7.1/23,
    8x44100 0.64/2.1/4.4, 16x44100 3.8/5.9/13, 32x44100 9.4/4.8/9.1,
    64x44100 34/12/136, 1x441000 9.9/5.0/1.9. The scan's cost per step jumps once the
    batch no longer fits a few vector registers; the associative scan is ~3.5 ns per
    element. So ``"auto"`` (the default, :data:`ONE_POLE_DEFAULT_METHOD`) uses the scan
    for at most 65 536 samples and at most 2^20 elements in all, else the associative
    scan.

    Args:
      x: input, shape ``(..., n)``.
      coeff: pole ``p`` in ``[0, 1)``, scalar, ``(..., 1)`` or ``(..., n)``
        (time-varying). :func:`one_pole_coefficient` maps a time constant to it.
      initial: state ``y[-1]``, broadcastable to ``(...)``.
      method: ``"scan"``, ``"associative"``, ``"blocked"``, ``"auto"`` or None (the
        default).
      unroll: ``lax.scan`` unroll factor.
    Returns:
      Shape ``(..., n)``.
    """
    x = _as_float(x)
    p = jnp.asarray(coeff, x.dtype)
    shape = jnp.broadcast_shapes(x.shape, p.shape)
    x = jnp.broadcast_to(x, shape)
    p = jnp.broadcast_to(p, shape)
    y0 = jnp.broadcast_to(jnp.asarray(initial, x.dtype), shape[:-1])
    method = ONE_POLE_DEFAULT_METHOD if method is None else method
    if method == "auto":
        batch = int(np.prod(shape[:-1], dtype=np.int64))
        method = "scan" if shape[-1] <= 65536 and batch * shape[-1] <= 2**20 else "associative"
    if method == "scan":
        return _one_pole_scan(x, p, y0, unroll)
    if method == "associative":
        return _one_pole_associative(x, p, y0)
    if method == "blocked":
        return _one_pole_blocked(x, p, y0)
    raise ValueError(f"method must be 'scan', 'associative', 'blocked', 'auto' or None, got {method!r}")


def parameter_smoother(target, rate: float = 0.005, initial=0.0, n_samples: int | None = None, *,
                       exact_rounding: bool = False) -> Array:
    """Per-sample parameter smoother ``z += (x - z) * rate``, output after the update.

    amsynth's ``ParamSmoother``/``SmoothedParam`` (README §5): ``rate = 0.005`` per sample
    regardless of the sample rate (time constant 199.5 samples). Output ``n`` is the
    state after ``n + 1`` updates, so for a constant target
    ``z[n] = x + (z0 - x) (1 - rate)^(n + 1)``.

    Args:
      target: ``(..., n)`` per-sample targets, or, with ``n_samples``, a constant target
        broadcastable to ``(...)``.
      rate: update rate per sample, in ``(0, 1]``.
      initial: state ``z0`` before the first sample, broadcastable to ``(...)``.
      n_samples: output length for a constant target (static); ``None`` when
        ``target`` is per-sample.
      exact_rounding: iterate ``z + (x - z)*rate`` in float32 like the C code (a
        ``lax.scan``). Otherwise a constant target uses the closed form and a
        per-sample target :func:`one_pole_lowpass` (both within ~1e-5 relative; a
        float32 loop stalls ~100 ulp short of the target).
    Returns:
      Shape ``(..., n)``.
    """
    x = _as_float(target)
    if n_samples is not None:
        z0 = jnp.broadcast_to(jnp.asarray(initial, x.dtype), jnp.broadcast_shapes(x.shape, jnp.shape(initial)))
        x = jnp.broadcast_to(x, z0.shape)
        if not exact_rounding:
            i = jnp.arange(int(n_samples), dtype=x.dtype)
            decay = jnp.exp((i + 1.0) * jnp.log1p(jnp.asarray(-rate, x.dtype)))
            return x[..., None] + (z0 - x)[..., None] * decay
        x = jnp.broadcast_to(x[..., None], x.shape + (int(n_samples),))
    z0 = jnp.broadcast_to(jnp.asarray(initial, x.dtype), x.shape[:-1])
    if not exact_rounding:
        return one_pole_lowpass(x, 1.0 - jnp.asarray(rate, x.dtype), z0)
    r = jnp.asarray(rate, x.dtype)

    def body(z, xn):
        z = z + strict_round((xn - z) * r)
        return z, z

    _, zs = lax.scan(body, z0, jnp.moveaxis(x, -1, 0))
    return jnp.moveaxis(zs, 0, -1)
