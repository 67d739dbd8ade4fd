"""Envelopes: linear ADSR with integer segment lengths, and an exponential ADSR.

Pure, synth-agnostic JAX functions: jit/vmap/grad safe, leading batch dims ``...``,
time last. Times in seconds, levels linear (0..1), sample indices in samples;
``n_samples`` and ``sample_rate`` are static Python numbers. Both envelopes are closed
forms in the sample index (no per-sample scan).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from diffsynth.control import strict_divide, strict_round

__all__ = ["adsr", "adsr_exponential", "sequential_float32_ramp"]

Array = jax.Array

_F32 = jnp.float32
_FLT_MIN = float(jnp.finfo(jnp.float32).tiny)


def _f32(x) -> Array:
    return jnp.asarray(x, _F32)


def _safe_positive(x: Array) -> Array:
    """``x`` where ``x > 0`` else 1: a divisor whose unused branch cannot poison grads."""
    return jnp.where(x > 0, x, jnp.ones_like(x))


def _st_floor(x: Array) -> Array:
    """``floor(x)`` forward (exactly: ``x - x`` is 0), identity backward (straight-through)."""
    return lax.stop_gradient(jnp.floor(x)) + (x - lax.stop_gradient(x))


def _breakpoint(at: Array, left: Array, right: Array) -> Array:
    """``right``, except that where ``at`` its gradient is the mean of both sides'.

    The first sample of a segment sits exactly on the integer breakpoint, where the
    envelope (piecewise linear in the segment length) has a kink; averaging the one-sided
    derivatives makes the straight-through gradient a central difference there. Both
    sides have the same value at the breakpoint, so the forward value is unchanged.
    """
    avg = 0.5 * (left + right)
    mixed = lax.stop_gradient(right) + (avg - lax.stop_gradient(avg))
    return jnp.where(at, mixed, right)


def _frames(time_s, sample_rate: float) -> Array:
    """Segment length ``(int)(T * sr)`` in float32 (C's truncating cast), straight-through."""
    x = jnp.maximum(_f32(time_s) * _F32(sample_rate), 0.0)
    return _st_floor(x)


def _sample_index(idx) -> Array:
    """An event's sample index as float32; float indices are floored (straight-through)."""
    i = jnp.asarray(idx)
    if jnp.issubdtype(i.dtype, jnp.floating):
        return _st_floor(i.astype(_F32))
    return i.astype(_F32)


# ---------------------------------------------------------------------------------------
# Emulation of sequential float32 accumulation, in closed form
# ---------------------------------------------------------------------------------------

_RUN_CAP = 2**30  # "never leaves this run" (int32-safe)


def _float32_runs(start: Array, inc: Array, n_runs: int) -> tuple[Array, Array, Array]:
    """Piecewise-linear description of ``v[j+1] = fl32(v[j] + inc)``, ``v[0] = start``.

    While ``v`` stays in one binade ``[2^(e-1), 2^e)`` (ulp ``u``) and the exact sum stays
    in it, every step adds exactly ``round(inc/u)*u``; so the sequence is a run of
    equal steps per binade, joined by single explicitly rounded crossing steps. Each
    iteration records one run and then takes its crossing step. Round-half-even ties
    (``inc/u`` ending in .5) give equal steps too once ``v/u`` is even, so only a first
    step from an odd ``v/u`` (and values at 0 or below ``FLT_MIN``) is taken alone.

    Returns ``(first_step, start_value, step)``, each ``(..., n_runs)``: run ``r``
    covers step indices ``j`` in ``[first_step[r], first_step[r+1])`` with
    ``v[j] = start_value[r] + (j - first_step[r]) * step[r]``.
    """
    start, inc = jnp.broadcast_arrays(_f32(start), _f32(inc))

    def body(carry, _):
        i, v = carry
        neg = (v < 0) | ((v == 0) & (inc < 0))
        sgn = jnp.where(neg, -1.0, 1.0).astype(_F32)
        w = v * sgn
        c = inc * sgn
        tiny = w < _FLT_MIN
        _, e = jnp.frexp(jnp.where(tiny, 1.0, w))
        u = jnp.ldexp(jnp.ones_like(w), e - 24)  # ulp of w's binade [2^(e-1), 2^e)
        big_w = w / u  # integer in [2^23, 2^24), exact
        cq = jnp.clip(c / u, -(2.0**26), 2.0**26)
        s_units = jnp.round(cq)  # half-to-even, like the FPU
        tie = (cq - jnp.floor(cq)) == 0.5
        fl_cq = jnp.floor(cq).astype(jnp.int32)
        big_w_i = big_w.astype(jnp.int32)
        s_abs = jnp.maximum(jnp.abs(s_units).astype(jnp.int32), 1)
        # Ascending magnitude: step j is in-binade iff W + jS + c/u < 2^24.
        room_up = (2**24 - big_w_i) - fl_cq - 1
        # Descending: step j is in-binade iff W + jS + c/u >= 2^23.
        room_down = (big_w_i - 2**23) + fl_cq
        room = jnp.where(c >= 0, room_up, room_down)
        m = jnp.where(room >= 0, room // s_abs + 1, 0)
        m = jnp.where(s_units == 0, _RUN_CAP, m)  # |inc| < u/2: v never changes again
        # A tie rounds to even: from an even W every step is round(c/u) (half-to-even);
        # from an odd W the first step differs, so take it explicitly.
        m = jnp.where(tiny | (tie & (big_w_i % 2 == 1)), 0, m)
        m = jnp.minimum(m, 2**29)
        step = sgn * s_units * u
        v_end = v + jnp.minimum(m, 2**24).astype(_F32) * step
        v_next = v_end + inc  # the crossing step, rounded by the FPU
        i_next = jnp.minimum(i + m + 1, _RUN_CAP)
        return (i_next, v_next), (i, v, step)

    i0 = jnp.zeros(start.shape, jnp.int32)
    _, (first, value, step) = lax.scan(body, (i0, start), None, length=int(n_runs))
    return jnp.moveaxis(first, 0, -1), jnp.moveaxis(value, 0, -1), jnp.moveaxis(step, 0, -1)


def _eval_runs(runs: tuple[Array, Array, Array], j: Array) -> Array:
    """Evaluate :func:`_float32_runs` at integer step indices ``j`` (``(..., m)``, >= 0)."""
    first, value, step = runs
    batch = jnp.broadcast_shapes(first.shape[:-1], j.shape[:-1])
    n_runs = first.shape[-1]
    first = jnp.broadcast_to(first, batch + (n_runs,)).reshape(-1, n_runs)
    value = jnp.broadcast_to(value, batch + (n_runs,)).reshape(-1, n_runs)
    step = jnp.broadcast_to(step, batch + (n_runs,)).reshape(-1, n_runs)
    jj = jnp.broadcast_to(j, batch + j.shape[-1:]).reshape(-1, j.shape[-1])
    r = jax.vmap(lambda a, q: jnp.searchsorted(a, q, side="right"))(first, jj) - 1
    r = jnp.clip(r, 0, n_runs - 1)
    f = jnp.take_along_axis(first, r, axis=-1)
    v = jnp.take_along_axis(value, r, axis=-1)
    s = jnp.take_along_axis(step, r, axis=-1)
    out = v + (jj - f).astype(_F32) * s
    return out.reshape(batch + j.shape[-1:])


@functools.partial(jax.jit, static_argnames=("n_samples", "n_runs"))
def sequential_float32_ramp(start, inc, n_samples: int, n_runs: int = 64) -> Array:
    """``y[j] = fl32(...fl32(fl32(start + inc) + inc)...)`` (j additions), in closed form.

    A float32 accumulator that adds a constant drifts from ``start + j*inc`` (by ~0.1%
    after 176 400 additions of 1/176 400), and plugins accumulate this way (amsynth's
    ADSR, README §6.6). This reproduces the drift bit-exactly without a per-sample
    loop: ``n_runs`` bounds the number of binade crossings handled exactly (64 covers
    any ramp between 0 and 2 with ``|inc| >= 1e-9``); later steps continue linearly.

    Args:
      start, inc: float32, broadcastable to ``(...)``.
      n_samples: number of outputs (static); ``y[0] = start``.
      n_runs: number of exactly handled runs (static).
    Returns:
      Shape ``(..., n_samples)``. Not differentiable (piecewise constant in ``inc``).
    """
    runs = _float32_runs(start, inc, n_runs)
    j = jnp.arange(int(n_samples), dtype=jnp.int32)[None, :].reshape((1,) * (runs[0].ndim - 1) + (-1,))
    return _eval_runs(runs, j)


_GLIDE_STEPS = 2048  # float32 smoother steps emulated; by then it has stalled or is < 1e-4 of its start


def _smoother_steps(start: Array, target: Array, rate: float, n: int) -> Array:
    """``z[0] = start``, ``z[k+1] = fl32(z[k] + fl32(fl32(target - z[k]) * rate))``; ``(..., n)``."""
    start, target = jnp.broadcast_arrays(_f32(start), _f32(target))

    def body(z, _):
        return z + strict_round((target - z) * _F32(rate)), z

    _, zs = lax.scan(body, start, None, length=int(n))
    return jnp.moveaxis(zs, 0, -1)


# ---------------------------------------------------------------------------------------
# Linear ADSR
# ---------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("n_samples", "sample_rate", "decay_min_s", "sustain_smoothing",
                                             "exact_rounding", "n_runs"))
def adsr(attack_s, decay_s, sustain, release_s, n_samples: int, sample_rate: float, note_on=0,
         note_off=None, *, initial_value=0.0, decay_min_s: float = 0.0005,
         sustain_smoothing: float = 0.005, exact_rounding: bool = False,
         n_runs: int = 64) -> Array:
    """Linear ADSR with integer segment lengths (amsynth's ``ADSR``, README §6.6).

    State machine, per sample, output-then-increment (``out[i] = value; value += inc``):

    * **attack** at ``note_on``: ``frames = int(attack_s*sr)`` (float32 product,
      truncated), target 1, or ``sustain`` when ``decay_s <= decay_min_s``;
      ``inc = (target - value)/frames`` from the current value (``initial_value``).
    * **decay**: ``frames = int(decay_s*sr)``, ``inc = (sustain - value)/frames``.
    * **sustain**: the value glides from the level reached to ``sustain`` by
      ``z += (sustain - z)*sustain_smoothing`` per sample (amsynth's sustain smoother;
      0 disables it).
    * **release** at ``note_off``: from the value the envelope has at that sample,
      ``frames = int(release_s*sr)``, ``inc = -value/frames``; then 0 for good.
    * A segment of 0 frames is skipped without changing the value (C's ``x/0`` step is
      never applied). Before ``note_on`` the output is ``initial_value``.

    Gradients (straight-through): frame counts and event indices are integers in the
    forward pass (``floor``), but their backward pass is the identity of ``T*sr``
    (resp. the float index). So gradients w.r.t. times are those of the envelope with
    continuous segment lengths: a segment's slope and the onset of all later segments
    move with ``T``; at the sample on a breakpoint the two one-sided derivatives are
    averaged, which makes them match central differences over +-1 frame of the
    floored envelope (to ~1e-4 relative in the tests). Gradients
    w.r.t. ``sustain``/``initial_value`` are exact.

    Precision: by default each segment is the exact line ``start + inc*i`` in float32.
    amsynth accumulates ``value += inc`` in float32, which drifts ~0.1% over a 4 s
    segment. ``exact_rounding=True`` reproduces that accumulation bit-exactly
    (:func:`sequential_float32_ramp`; the gradient stays the one of the exact line);
    the sustain glide is then also iterated in float32 for its first 2048 samples
    (a float32 smoother stalls ~100 ulp short of its target; the closed form does not)
    and held afterwards.

    Args:
      attack_s, decay_s, release_s: segment times (s), broadcastable to ``(...)``.
        amsynth: ``(2.5 n)^3 + 0.0005``.
      sustain: sustain level (linear, 0..1), broadcastable to ``(...)``.
      n_samples: output length (static).
      sample_rate: sample rate (Hz), static.
      note_on: note-on sample index (int, or float: floored, straight-through),
        broadcastable to ``(...)``.
      note_off: note-off sample index (same types), ``None`` for a held note. Values
        before ``note_on`` are treated as ``note_on``. For a time in seconds pass
        ``t_s * sample_rate`` (float, differentiable) or
        :func:`diffsynth.control.seconds_to_samples` (int, DawDreamer's rounding).
      initial_value: level the attack starts from (retrigger/legato), broadcastable.
      decay_min_s: decay time at or below which the attack aims at ``sustain``
        (amsynth: 0.0005 s).
      sustain_smoothing: one-pole rate per sample of the sustain glide, in ``[0, 1)``.
      exact_rounding: emulate float32 sequential accumulation (see Precision).
      n_runs: binade runs handled exactly per segment when ``exact_rounding``.
    Returns:
      Envelope, shape ``(..., n_samples)``, float32.
    """
    sr = float(sample_rate)
    n_samples = int(n_samples)
    s = _f32(sustain)
    v0 = _f32(initial_value)
    d_s = _f32(decay_s)
    fa = _frames(attack_s, sr)
    fd = _frames(decay_s, sr)
    fr = _frames(release_s, sr)
    n_on = _sample_index(note_on)
    n_off = _F32(n_samples) if note_off is None else _sample_index(note_off)
    n_off = jnp.maximum(n_off, n_on)
    if not 0.0 <= sustain_smoothing < 1.0:
        raise ValueError(f"sustain_smoothing must be in [0, 1), got {sustain_smoothing}")
    log_rho = jnp.log(_F32(1.0 - sustain_smoothing))

    batch = jnp.broadcast_shapes(s.shape, v0.shape, d_s.shape, fa.shape, fd.shape, fr.shape,
                                 n_on.shape, n_off.shape)
    bc = lambda x: jnp.broadcast_to(x, batch)[..., None]  # noqa: E731
    s, v0, d_s, fa, fd, fr, n_on, n_off = map(bc, (s, v0, d_s, fa, fd, fr, n_on, n_off))

    target_a = jnp.where(d_s <= _F32(decay_min_s), s, 1.0)
    inc_a = strict_divide(target_a - v0, _safe_positive(fa))
    v_a = v0 + inc_a * fa
    inc_d = strict_divide(s - v_a, _safe_positive(fd))
    v_d = v_a + inc_d * fd

    def pre_release(k, attack_line, decay_line, sustain_glide):
        """Value at ``k`` samples after note-on, ignoring the release."""
        decay = _breakpoint(k == fa, attack_line, decay_line)
        sus = _breakpoint(k - fa == fd, decay_line, sustain_glide)
        return jnp.where(k < 0, v0, jnp.where(k < fa, attack_line, jnp.where(k - fa < fd, decay, sus)))

    def glide(k, v_d):
        k_s = jnp.maximum(k - fa - fd, 0.0)
        return s + (v_d - s) * jnp.exp(k_s * log_rho)

    n = jnp.arange(n_samples, dtype=_F32)
    k = n - n_on
    k_off = n_off - n_on
    parts = lambda kk: (v0 + inc_a * kk, v_a + inc_d * (kk - fa), glide(kk, v_d))  # noqa: E731
    pre = pre_release(k, *parts(k))
    v_m = pre_release(k_off, *parts(k_off))
    inc_r = strict_divide(-v_m, _safe_positive(fr))
    k_r = n - n_off
    release_line = v_m + inc_r * k_r
    release = jnp.where(k_r < fr, _breakpoint(k_r == 0, pre, release_line),
                        _breakpoint(k_r == fr, release_line, jnp.zeros_like(release_line)))
    out = jnp.where(n < n_off, pre, release)
    if not exact_rounding:
        return out

    # Same state machine with float32-accumulated segments (forward only).
    sg = lax.stop_gradient
    fa_i, fd_i = (sg(x).astype(jnp.int32) for x in (fa, fd))
    inc_a_x = sg(inc_a)
    runs_a = _float32_runs(sg(v0)[..., 0], inc_a_x[..., 0], n_runs)
    step_index = lambda kk, lo: jnp.clip(sg(kk).astype(jnp.int32) - lo, 0, None)  # noqa: E731
    v_a_x = _eval_runs(runs_a, fa_i)
    inc_d_x = strict_divide(sg(s) - v_a_x, _safe_positive(sg(fd)))
    runs_d = _float32_runs(v_a_x[..., 0], inc_d_x[..., 0], n_runs)
    v_d_x = _eval_runs(runs_d, fd_i)

    glide_x = _smoother_steps(v_d_x[..., 0], sg(s)[..., 0], sustain_smoothing, _GLIDE_STEPS)

    def parts_x(kk):
        j_s = jnp.minimum(step_index(kk, fa_i + fd_i), _GLIDE_STEPS - 1)
        glide_kk = jnp.take_along_axis(glide_x, jnp.broadcast_to(j_s, glide_x.shape[:-1] + j_s.shape[-1:]),
                                       axis=-1)
        return (_eval_runs(runs_a, step_index(kk, 0)), _eval_runs(runs_d, step_index(kk, fa_i)), glide_kk)

    pre_x = pre_release(sg(k), *parts_x(k))
    v_m_x = pre_release(sg(k_off), *parts_x(k_off))
    inc_r_x = strict_divide(-v_m_x, _safe_positive(sg(fr)))
    runs_r = _float32_runs(v_m_x[..., 0], inc_r_x[..., 0], n_runs)
    release_x = jnp.where(sg(k_r) < sg(fr), _eval_runs(runs_r, step_index(n, sg(n_off).astype(jnp.int32))), 0.0)
    out_x = jnp.where(n < sg(n_off), pre_x, release_x)
    # Forward exactly out_x (out - out == 0), backward the gradient of the closed form.
    return lax.stop_gradient(out_x) + (out - lax.stop_gradient(out))


# ---------------------------------------------------------------------------------------
# Exponential ADSR
# ---------------------------------------------------------------------------------------

_ATTACK_TARGET = 1.0 / (1.0 - math.exp(-1.0))  # reaches 1 after exactly one time constant


@functools.partial(jax.jit, static_argnames=("n_samples", "sample_rate", "attack_target", "min_time_s"))
def adsr_exponential(attack_s, decay_s, sustain, release_s, n_samples: int, sample_rate: float,
                     note_on=0, note_off=None, *, initial_value=0.0,
                     attack_target: float = _ATTACK_TARGET, min_time_s: float = 1e-6) -> Array:
    """ADSR with one-pole (exponential) segments, smooth in all inputs.

    With ``t`` the time since note-on (s) and time constants ``attack_s``, ``decay_s``,
    ``release_s``:

    * attack: ``v = A + (v0 - A) exp(-t/attack_s)`` toward ``A = attack_target`` (> 1),
      until ``v`` reaches 1. The default ``A = 1/(1 - e^-1)`` makes the attack from 0
      last exactly ``attack_s``.
    * decay: ``v = sustain + (1 - sustain) exp(-(t - t_attack)/decay_s)``.
    * release at ``note_off``: ``v = v_off exp(-(t - t_off)/release_s)``.

    Event indices are floored like :func:`adsr` (straight-through). Times are clamped
    to ``min_time_s``. No integer frame counts, so gradients are exact.

    Args: as :func:`adsr` (times are time constants here). Returns ``(..., n_samples)``.
    """
    sr = float(sample_rate)
    tau_a = jnp.maximum(_f32(attack_s), min_time_s)
    tau_d = jnp.maximum(_f32(decay_s), min_time_s)
    tau_r = jnp.maximum(_f32(release_s), min_time_s)
    s = _f32(sustain)
    v0 = _f32(initial_value)
    n_on = _sample_index(note_on)
    n_off = _F32(int(n_samples)) if note_off is None else _sample_index(note_off)
    n_off = jnp.maximum(n_off, n_on)
    batch = jnp.broadcast_shapes(tau_a.shape, tau_d.shape, tau_r.shape, s.shape, v0.shape,
                                 n_on.shape, n_off.shape)
    bc = lambda x: jnp.broadcast_to(x, batch)[..., None]  # noqa: E731
    tau_a, tau_d, tau_r, s, v0, n_on, n_off = map(bc, (tau_a, tau_d, tau_r, s, v0, n_on, n_off))
    a = _F32(attack_target)
    # Attack duration from v0 to 1 (0 when v0 >= 1).
    ratio = (a - v0) / (a - 1.0)
    t_att = tau_a * jnp.log(jnp.where(ratio > 1.0, ratio, 1.0))

    def pre_release(t):
        t_pos = jnp.maximum(t, 0.0)
        t_dec = jnp.maximum(t - t_att, 0.0)
        att = a + (v0 - a) * jnp.exp(-t_pos / tau_a)
        dec = s + (1.0 - s) * jnp.exp(-t_dec / tau_d)
        return jnp.where(t < 0, v0, jnp.where(t < t_att, att, dec))

    n = jnp.arange(int(n_samples), dtype=_F32)
    t = (n - n_on) / sr
    v_off = pre_release((n_off - n_on) / sr)
    t_rel = jnp.maximum((n - n_off) / sr, 0.0)
    release = v_off * jnp.exp(-t_rel / tau_r)
    return jnp.where(n < n_off, pre_release(t), release)
