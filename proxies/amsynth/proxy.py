"""A differentiable JAX proxy of amsynth 1.13: the plugin's own algorithm, quirks included.

Everything follows ``shared/amsynth/README.md`` (the measured spec) and, for float operation
order, amsynth 1.13.2's source. Parameters are physical (:class:`ProxyParams`; seconds, Hz,
gain factors, categorical probabilities); :mod:`proxies.amsynth.calibration` maps the plugin's
normalized values to them. ``render(params, config, key)`` returns stereo audio ``[B, 2, T]``.

Signal graph (one voice per render, README §1)::

    LFO (key-synced, 7 shapes) --lfo[0] per block--> pitch FM, cutoff;  --lfo[i]--> amp
    osc1, osc2 (sine | box-filtered pulse | saw/triangle | noise | S&H; osc2 sync, range,
      semitones, detune)  -> mix + ring mod -> biquad LP/HP/BP/notch/bypass, 12 or 24 dB
      (coefficients per block, filter envelope read at the block's LAST sample)
    -> VCA (amp ADSR x velocity x LFO x master volume, 1 kHz one-pole)
    -> distortion sign(x)|x|^c -> Freeverb with the rectifying clamp, dry gain 2 - wet
    -> linked soft limiter -> L, R

**What the proxy reproduces.** The kept render of the deterministic host protocol
(:mod:`proxies.host`: pre-roll with the note held, warm-up render, ``load_graph``, flush,
kept render) of one note: note-on at sample 0, note-off at ``int(hold_s * sr)``. In that render
the oscillator and LFO phases start at 0; the oscillator frequency lerpers start at the
warm-up's last targets; the VCA one-pole holds the warm-up's last value; the osc2 sync
accumulator holds what the pre-roll and warm-up added; the volume, crunch and reverb
smoothers have converged; the reverb lines and comb stores are empty and the limiter peak is
0. The control grid is amsynth's: sub-blocks of at most 64 samples that restart at every host
buffer (512) and at the note-off event (:func:`block_table`).

**Exactness.** The oscillator and LFO phases are accumulated in float32 radians sample by
sample in the plugin's operation order: amsynth's phase drifts from the ideal one by up to
~5e-3 rad over 1.5 s (float32 rounding), and a naive saw only matches the plugin if the
drift is reproduced (an ideal phase costs ~20-50 dB SNR on bright patches). The same holds for
the ADSRs (float32 ramps), the semitone factors (glibc ``powf`` values) and the LFO value at
block starts (a sine accurate to ~0.1 ulp), which sets the pitch. The sync accumulator is
float64 in the plugin: emulated with float32 pairs. XLA's float rewrites (FMA contraction,
reciprocal division, constant re-association) are blocked where they would move a phase (see
the helpers below). The biquads run in the well-conditioned "delta" coordinates of
:class:`diffsynth.filters.BiquadCoefficients` (the same state as amsynth's float64 TDF-II,
~100 dB from it at low cutoffs). Measured against the plugin: 85-130 dB SNR per stage.

**Two modes, one code path.** Every categorical choice enters as a probability vector:
waveforms are mixed sample by sample, filter kinds by mixing numerators (shared denominator),
the 12/24 dB slope by mixing the one- and two-section outputs, sync by mixing synced and
free-running osc2, the LFO pitch target by mixing modulated and unmodulated frequencies.
Exact mode = one-hot probabilities (:func:`proxies.amsynth.calibration.to_proxy` with
``probs=None``); its output equals the hard choice bit for bit.

**Noise.** Noise and S&H oscillators and the noise/S&H LFO replay the plugin's process-global
generator and S&H counters as they run under the host protocol in a fresh process (what the
render pool's fork mode gives): sample-exact there (:mod:`proxies.amsynth.noise`,
``ProxyConfig.noise="replay"``). ``noise="random"`` draws from a counter-based hash of ``key``.

**Not modelled.** Portamento and the keyboard modes (fixed in the sampling prior; with one
note per render they change nothing: the glide starts and ends on the same note). Pitch
bend, CC pan, the sustain pedal and chords are not part of a render.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from diffsynth import effects as dsfx
from diffsynth.control import strict_divide
from diffsynth import envelopes as dsenv
from diffsynth import filters as dsfilt
from proxies.amsynth import noise as lcg
from proxies.synth import note_off_sample

__all__ = [
    "ProxyConfig",
    "ProxyParams",
    "CATEGORICAL_SIZES",
    "BlockTable",
    "block_table",
    "expand_blocks",
    "render",
    "render_mono_voice",
    "master_section",
]

F32 = jnp.float32
# amsynth's float constants (src/VoiceBoard/Synth--.h)
TWO_PI = np.float32(6.28318530717958647692)
PI = np.float32(3.14159265358979323846)
HALF_PI = np.float32(1.57079632679489661923)
E_F = np.float32(2.7182818284590452354)
KEYTRACK_BASE_HZ = np.float32(261.626)

#: Number of choices of each categorical parameter, in the order used by ProxyParams.
CATEGORICAL_SIZES = {
    "osc1_waveform": 5,  # sine, pulse, saw, noise, sample_hold
    "osc2_waveform": 5,
    "lfo_waveform": 7,  # sine, square, triangle, noise, sample_hold, saw_up, saw_down
    "filter_type": 5,  # lowpass, highpass, bandpass, notch, bypass
    "filter_slope": 2,  # 12 dB, 24 dB
    "osc2_sync": 2,  # off, on
    "freq_mod_osc": 3,  # osc1+osc2, osc1, osc2
}


class ProxyConfig(NamedTuple):
    """Static render settings (hashable: pass as a static argument to ``jax.jit``).

    Attributes:
      sample_rate: Hz.
      duration_s: render length; ``n_samples = round(duration_s * sample_rate)``.
      note: MIDI note number (12-TET, A4 = 440 Hz).
      velocity: MIDI velocity 1..127.
      hold_s: note-off time (s); DawDreamer sends it at ``int(hold_s * sample_rate)``.
      buffer_size: host buffer size (the 64-sample control grid restarts at its multiples).
      lfo_polarity: sign of the triangle LFO (+1: the host protocol selects saw-up first).
      warm_start: model the state the host protocol's pre-roll and warm-up renders leave in
        the voice (``proxies.host``: frequency lerpers at the warm-up's last targets, the VCA
        one-pole at its last value, the sync accumulator). False = a fresh voice.
      preroll_samples: length of the host's pre-roll render (``PluginInfo.preroll_samples``).
      noise: ``"replay"``: noise and S&H replay the plugin's generator as it runs in a fresh
        process under the host protocol (the render pool's fork mode): sample-exact there
        (:mod:`proxies.amsynth.noise`). ``"random"``: a counter-based hash seeded by ``key``
        (same statistics, no sample match).
    """

    sample_rate: int = 44100
    duration_s: float = 1.5
    note: int = 60
    velocity: int = 100
    hold_s: float = 1.0
    buffer_size: int = 512
    lfo_polarity: float = 1.0
    warm_start: bool = True
    preroll_samples: int = 4096
    noise: str = "replay"

    @property
    def n_samples(self) -> int:
        from proxies.synth import render_samples  # the one derivation of render lengths

        return render_samples(self.duration_s, self.sample_rate)


class ProxyParams(NamedTuple):
    """Physical parameters of one render per batch row (every field ``[B]`` unless noted).

    Continuous (units in the names): envelope times ``*_s`` (s), levels 0..1, ``filter_q``
    (Q = 1/r, 0.5..16.7; r = max(0.001, 2(1 - res))), ``filter_env_amount`` (E, -16..16),
    ``filter_cutoff_mult`` (16^v, 0.25..64, times the key-track base frequency),
    ``osc2_detune_ratio`` (1.25^v), ``osc2_octave`` (octaves, -3..4; integer in exact
    mode), ``osc2_semitones`` (-12..12; integer in exact mode), ``master_gain`` (n^2),
    ``lfo_hz``, ``osc_mix`` (m, -1..1), ``lfo_pitch_depth`` (a_fm: f *= 1 + a_fm lfo),
    ``lfo_cutoff_depth``/``lfo_amp_depth`` (a: x *= 1 - a (1 - lfo)/2), ``ring_mod``
    (0..1), ``osc1_shape``/``osc2_shape`` (pulse width / saw shape cv 0..1),
    ``reverb_room`` (comb feedback 0.7..0.98), ``reverb_damp`` (0..0.4), ``reverb_wet``,
    ``reverb_width``, ``distortion_exponent`` (c, 1..0.1), ``filter_key_track``,
    ``filter_vel_sens``, ``amp_vel_sens`` (blends 0..1).

    Categorical: ``probs`` maps each name of :data:`CATEGORICAL_SIZES` to ``[B, K]``
    probabilities (one-hot in exact mode).

    Not rendered (carried so that normalized -> proxy -> normalized round-trips):
    ``portamento_s``, ``keyboard_mode`` (0..2), ``portamento_mode`` (the plugin's
    normalized values of these three, fixed in the sampling prior).
    """

    amp_attack_s: jax.Array
    amp_decay_s: jax.Array
    amp_sustain: jax.Array
    amp_release_s: jax.Array
    filter_attack_s: jax.Array
    filter_decay_s: jax.Array
    filter_sustain: jax.Array
    filter_release_s: jax.Array
    filter_q: jax.Array
    filter_env_amount: jax.Array
    filter_cutoff_mult: jax.Array
    osc2_detune_ratio: jax.Array
    master_gain: jax.Array
    lfo_hz: jax.Array
    osc2_octave: jax.Array
    osc_mix: jax.Array
    lfo_pitch_depth: jax.Array
    lfo_cutoff_depth: jax.Array
    lfo_amp_depth: jax.Array
    ring_mod: jax.Array
    osc1_shape: jax.Array
    osc2_shape: jax.Array
    reverb_room: jax.Array
    reverb_damp: jax.Array
    reverb_wet: jax.Array
    reverb_width: jax.Array
    distortion_exponent: jax.Array
    osc2_semitones: jax.Array
    filter_key_track: jax.Array
    filter_vel_sens: jax.Array
    amp_vel_sens: jax.Array
    portamento_s: jax.Array
    keyboard_mode: jax.Array
    portamento_mode: jax.Array
    probs: dict


# ---------------------------------------------------------------------------------------
# Control grid
# ---------------------------------------------------------------------------------------


class BlockTable(NamedTuple):
    """amsynth's sub-block grid for one note (host-side NumPy, static per config).

    ``starts``/``lengths`` describe the sub-blocks covering ``[0, n_padded)`` (the last one
    may reach past ``n_samples``; its filter-envelope read happens there). Per sample:
    ``block_id``, ``index`` (position inside its block), ``is_start``, ``is_end``.
    ``active_end`` is the end of the warm-up render's last host buffer (the voice is
    processed up to there when still sounding).
    """

    starts: np.ndarray
    lengths: np.ndarray
    block_id: np.ndarray
    index: np.ndarray
    is_start: np.ndarray
    is_end: np.ndarray
    n_samples: int
    n_padded: int
    note_off: int
    rendered_end: int


def _check_config(config: ProxyConfig) -> None:
    """Clear errors for settings the proxy cannot render."""
    if not isinstance(config, ProxyConfig):
        raise TypeError(f"expected a ProxyConfig, got {type(config).__name__}")
    problems = []
    if not (isinstance(config.sample_rate, (int, np.integer)) and 8000 <= config.sample_rate <= 192000):
        problems.append(f"sample_rate must be an int in 8000..192000 Hz, got {config.sample_rate!r}")
    if not 0 < config.duration_s <= 600:
        problems.append(f"duration_s must be in (0, 600] s, got {config.duration_s!r}")
    if not 0 <= int(config.note) <= 127 or not 1 <= int(config.velocity) <= 127:
        problems.append(f"note must be 0..127 and velocity 1..127, got {config.note!r}, {config.velocity!r}")
    if not config.hold_s > 0:
        problems.append(f"hold_s must be > 0 s, got {config.hold_s!r}")
    if config.buffer_size % 64 or config.buffer_size <= 0:
        problems.append(f"buffer_size must be a positive multiple of 64, got {config.buffer_size!r}")
    if config.noise not in ("replay", "random"):
        problems.append(f"noise must be 'replay' or 'random', got {config.noise!r}")
    if config.lfo_polarity not in (1.0, -1.0):
        problems.append(f"lfo_polarity must be +1.0 or -1.0, got {config.lfo_polarity!r}")
    if problems:
        raise ValueError("ProxyConfig: " + "; ".join(problems))


@functools.lru_cache(maxsize=64)
def block_table(config: ProxyConfig) -> BlockTable:
    """Sub-blocks of amsynth's ``Synthesizer::process`` for ``config`` (README §3).

    Host buffers of ``buffer_size`` start at multiples of it; inside one, a sub-block is
    ``min(64, frames left in the buffer, frames until the next MIDI event)`` long. The
    events are the note-on at 0 and the note-off at ``int(hold_s * sr)`` (DawDreamer).
    """
    _check_config(config)
    sr = int(config.sample_rate)
    n = config.n_samples
    buf = int(config.buffer_size)
    note_off = note_off_sample(config.hold_s, sr)  # proxies.synth: the one derivation (floor, as DawDreamer)
    events = [e for e in (0, note_off) if e >= 0]
    starts, lengths = [], []
    frame = 0
    while frame < n:  # stop after the block that contains sample n - 1
        buf_end = (frame // buf + 1) * buf
        length = min(64, buf_end - frame)
        nxt = [e for e in events if e > frame]
        if nxt:
            length = min(length, nxt[0] - frame)
        starts.append(frame)
        lengths.append(length)
        frame += length
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    n_padded = int(starts[-1] + lengths[-1])
    block_id = np.repeat(np.arange(len(starts)), lengths)
    index = np.concatenate([np.arange(l) for l in lengths])
    is_start = index == 0
    is_end = index == np.repeat(lengths, lengths) - 1
    rendered_end = -(-n // buf) * buf
    return BlockTable(starts, lengths, block_id, index, is_start, is_end, n, n_padded,
                      note_off, rendered_end)


def expand_blocks(x, config: ProxyConfig) -> jax.Array:
    """Per-block values ``[..., NB]`` -> per-sample ``[..., n_padded]`` (each block's value held).

    Built from broadcasts over runs of full 64-sample blocks (a gather over 66k samples costs
    ~25x more on CPU); only the few blocks split by the note-off are expanded one by one.
    """
    tab = block_table(config)
    pieces = []
    b = 0
    nb = len(tab.lengths)
    while b < nb:
        e = b
        while e < nb and tab.lengths[e] == 64:
            e += 1
        if e > b:
            run = x[..., b:e]
            pieces.append(jnp.broadcast_to(run[..., None], run.shape + (64,)).reshape(run.shape[:-1] + (64 * (e - b),)))
            b = e
        else:
            pieces.append(jnp.broadcast_to(x[..., b:b + 1], x.shape[:-1] + (int(tab.lengths[b]),)))
            b += 1
    return jnp.concatenate(pieces, axis=-1)


# ---------------------------------------------------------------------------------------
# Float32 helpers in amsynth's operation order
# ---------------------------------------------------------------------------------------
#
# Under jit, XLA rewrites float arithmetic in ways amsynth's compiled code does not: it
# contracts ``a * b + c`` into fused multiply-adds (XLA:CPU), replaces a division by a constant
# with a multiplication by its reciprocal, and re-associates chains of constants. Each moves
# results by an ulp, and an ulp in a phase or a sync accumulator moves naive-waveform edges and
# sync resets. So, where float order matters: products that feed an addition go through
# ``_mul(a, b, one)`` (a product times a runtime 1.0 the compiler cannot fold, so a contraction
# computes fma(a*b, 1, c) = a*b + c), constants enter as ``_k(c, one)`` (opaque runtime
# values) and divisions by broadcasts as ``_div`` (``diffsynth.control.strict_divide``).
# Measured: without these, jitted renders of sync+LFO patches fell from 105 to 34-41 dB.


def _opaque_one(x) -> jax.Array:
    """1.0 as a value XLA/LLVM cannot constant-fold (``x`` is any runtime float array)."""
    return jnp.where(jnp.isnan(jnp.sum(x)), F32(2), F32(1))


def _mul(a, b, one):
    """``a * b`` rounded on its own, even where the compiler would fuse it into an FMA."""
    return (a * b) * one


def _k(c, one):
    """The float32 constant ``c`` as a runtime value (no re-association of constants)."""
    return F32(c) * one


def _div(a, b):
    """``a / b`` correctly rounded: XLA turns a division by a broadcast (a per-row or scalar
    divisor) into a multiplication by its reciprocal, an ulp off in ~30% of cases."""
    return strict_divide(a, b)


def _ffmodf(x, one):
    """``x - y * (int)(x / y)`` with y = 2 pi (Oscillator.cpp ``ffmodf``)."""
    tp = _k(TWO_PI, one)
    return x - _mul(tp, jnp.trunc(_div(x, tp)), one)


def _safe(x):
    return jnp.where(x != 0, x, jnp.ones_like(x))


def _saw(rads, shape, one):
    """amsynth's ``saw(rads, shape)``: naive saw <-> triangle (README §6.3)."""
    r = _ffmodf(rads, one)
    t = _div(r, _k(TWO_PI, one))
    a = (shape + F32(1)) / F32(2)
    half_a = a / F32(2)
    rise = _div(F32(2) * t, _safe(a))
    wrap = _div(F32(2) * t - F32(2), _safe(a))
    fall = _div(F32(1) - F32(2) * t, _safe(F32(1) - a))
    return jnp.where(t < half_a, rise, jnp.where(t > F32(1) - half_a, wrap, fall))


def _pulse_step(lrads, radinc, pwrads, one):
    """One sample of amsynth's box-filtered pulse (``doSquare``): returns (y, new phase)."""
    nrads = lrads + radinc
    tp = _k(TWO_PI, one)
    rising = nrads >= tp
    n_wrapped = jnp.where(rising, nrads - tp, nrads)
    inc_safe = _safe(radinc)
    y_rise = F32(2) * _div(n_wrapped, inc_safe) - F32(1)
    y_fall = F32(1) - F32(2) * _div(nrads - pwrads, inc_safe)
    y = jnp.where(rising, y_rise,
                  jnp.where(nrads <= pwrads, F32(1), jnp.where(lrads <= pwrads, y_fall, F32(-1))))
    return y, n_wrapped


def _pwrads(target_hz, pw, twopi_rate, one):
    """Pulse falling-edge phase: ``pi + pwscale * pi * min(pw, 0.9)`` (README §6.3)."""
    radsper = twopi_rate * target_hz
    pwscale = jnp.where(radsper < _k(0.3, one), F32(1), F32(1) - (radsper - _k(0.3, one)) / F32(2))
    pi = _k(PI, one)
    return pi + _mul(pwscale * pi, jnp.minimum(pw, _k(0.9, one)), one)


def _saw_shape(target_hz, pw, rate, one):
    """Saw slope clamp ``min(pw, pw - 2 f / sr)`` (``doSaw``)."""
    f = pw - _div(F32(2) * target_hz, _k(rate, one))
    return jnp.where(pw > f, f, pw)


def _sh_period(target_hz, rate):
    """``(int)(rate / f)`` as a float; f = 0 gives INT_MIN in C (x86): here -1, which has the
    same effect (a new value every sample, since the counter is never negative)."""
    q = F32(rate) / _safe(target_hz)
    return jnp.where(target_hz > 0, jnp.minimum(jnp.trunc(q), F32(2.0**30)), F32(-1))


def _hash_uniform(seed, index):
    """Counter-based uniform in [-1, 1): a 32-bit integer hash of (seed, index)."""
    x = index.astype(jnp.uint32) * jnp.uint32(0x9E3779B1) + seed.astype(jnp.uint32)
    x = x ^ (x >> jnp.uint32(16))
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> jnp.uint32(13))
    x = x * jnp.uint32(0xC2B2AE35)
    x = x ^ (x >> jnp.uint32(16))
    return (x >> jnp.uint32(8)).astype(F32) * F32(2.0**-23) - F32(1)


def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _two_prod(a, b, one):
    """Exact float32 product as a pair (Dekker split)."""
    split = F32(4097.0)

    def halves(x):
        t = _mul(split, x, one)
        hi = t - (t - x)
        return hi, x - hi

    p = _mul(a, b, one)
    ah, al = halves(a)
    bh, bl = halves(b)
    err = ((_mul(ah, bh, one) - p) + _mul(ah, bl, one) + _mul(al, bh, one)) + _mul(al, bl, one)
    return p, err


def _dd_add(hi, lo, x):
    """(hi, lo) + x for a float32 pair emulating the plugin's float64 sync accumulator."""
    s, e = _two_sum(hi, x)
    e = e + lo
    h = s + e
    return h, e - (h - s)


def _dd_sum(hi, lo):
    """Sum of float32 pairs along the last axis by pairwise double-float additions."""
    while hi.shape[-1] > 1:
        if hi.shape[-1] % 2:
            hi = jnp.concatenate([hi, jnp.zeros_like(hi[..., :1])], -1)
            lo = jnp.concatenate([lo, jnp.zeros_like(lo[..., :1])], -1)
        s, e = _two_sum(hi[..., 0::2], hi[..., 1::2])
        e = e + lo[..., 0::2] + lo[..., 1::2]
        hi = s + e
        lo = e - (hi - s)
    return hi[..., 0], lo[..., 0]


def _dd_mod_two_pi(hi, lo, one):
    """``(hi + lo) mod 2pi`` (2pi = amsynth's float constant), as a normalized pair."""
    q = jnp.floor(hi / TWO_PI)
    h, l = hi, lo
    for _ in range(2):
        ph, pl = _two_prod(q, jnp.full_like(q, TWO_PI), one)
        s, e = _two_sum(hi, -ph)
        e = e + (lo - pl)
        h = s + e
        l = e - (h - s)
        q = q + jnp.floor(h / TWO_PI)
    h = jnp.where(h < 0, h + TWO_PI, h)
    return _dd_add(h, l, F32(0))


# pi/2 in three pieces for an accurate range reduction of x in [0, 8): k * P1 is exact.
_PIO2_1 = np.float32(1.5707963705062866)  # float32(pi/2)
_PIO2_2 = np.float32(np.pi / 2 - np.float64(_PIO2_1))
_PIO2_3 = np.float32(np.pi / 2 - np.float64(_PIO2_1) - np.float64(_PIO2_2))


def _sin_accurate(x, one):
    """float32 ``sin(x)`` for x in [0, 8) within ~0.1 ulp of the exact value.

    glibc's ``sinf`` (what amsynth calls) is accurate to ~0.5 ulp; XLA's ``sin`` is a cheaper
    polynomial that is off by an ulp or two far more often. The LFO value at block starts
    sets the oscillator pitch (FM) and, through it, where hard sync resets fall, so it must
    round like the plugin's: argument reduction in double-float, Taylor series with the
    leading terms in double-float.
    """
    k = jnp.round(x * F32(2 / np.pi))
    ph, pl = _two_prod(k, jnp.full_like(k, _PIO2_1), one)
    s, e = _two_sum(x, -ph)
    e = e - pl - _mul(k, _PIO2_2, one) - _mul(k, _PIO2_3, one)
    rh = s + e
    rl = e - (rh - s)
    r2 = rh * rh
    # sin(r) = r + r^3 * S(r^2), cos(r) = 1 - r^2/2 + r^4 * C(r^2): the small tails in float32
    sin_tail = r2 * (F32(-1 / 6) + r2 * (F32(1 / 120) + r2 * (F32(-1 / 5040) + r2 * (
        F32(1 / 362880) + r2 * F32(-1 / 39916800)))))
    s_h, s_l = _two_sum(rh, rh * sin_tail)
    sin_r = s_h + (s_l + rl * (F32(1) + F32(3) * sin_tail))
    half_r2_h, half_r2_l = _two_prod(rh, rh * F32(0.5), one)
    half_r2_l = half_r2_l + rh * rl
    cos_tail = r2 * r2 * (F32(1 / 24) + r2 * (F32(-1 / 720) + r2 * (F32(1 / 40320) + r2 * (
        F32(-1 / 3628800) + r2 * F32(1 / 479001600)))))
    c_h, c_l = _two_sum(F32(1), -half_r2_h)
    cos_r = c_h + (c_l - half_r2_l + cos_tail)
    q = jnp.mod(k.astype(jnp.int32), 4)
    return jnp.where(q == 0, sin_r, jnp.where(q == 1, cos_r, jnp.where(q == 2, -sin_r, -cos_r)))


_PI_A = np.float32(3.140625)  # pi in three float32 pieces (Cody-Waite); k * _PI_A is exact
_PI_B = np.float32(np.float64(np.pi) - np.float64(_PI_A))
_PI_C = np.float32(np.float64(np.pi) - np.float64(_PI_A) - np.float64(_PI_B))


def _fast_sin(x):
    """``sin(x)`` for ``0 <= x < ~1e4`` within 2e-7: reduction by pi, odd Taylor polynomial.

    For waveform values (an error of 2e-7 is -134 dB). On CPU it is ~50x faster than XLA's
    ``sin``, which was the largest single cost of the voice.
    """
    k = jnp.round(x * F32(1 / np.pi))
    r = ((x - k * _PI_A) - k * _PI_B) - k * _PI_C
    r2 = r * r
    p = r + r * r2 * (F32(-1 / 6) + r2 * (F32(1 / 120) + r2 * (F32(-1 / 5040) + r2 * (
        F32(1 / 362880) + r2 * F32(-1 / 39916800)))))
    return jnp.where((k.astype(jnp.int32) & 1) == 1, -p, p)


def note_frequency(note: int) -> np.float32:
    """12-TET, A4 = 440 Hz, as amsynth's default ``TuningMap::noteToPitch`` (double, then float)."""
    base = 440.0 / (2.0 ** 5 * 2.0 ** (9 / 12.0))
    octaves, degree = divmod(int(note), 12)
    pitch = base * 2.0 ** octaves * (2.0 ** (degree / 12.0) if degree else 1.0)
    return np.float32(pitch)


def note_velocity(velocity: int) -> np.float32:
    """``(float)vel * (1.f/127.f)`` (MidiController.cpp)."""
    return np.float32(np.float32(velocity) * np.float32(np.float32(1) / np.float32(127)))


def vca_pole(sample_rate: float) -> np.float32:
    """VCA one-pole coefficient ``e^(-pi/2 min(4000/sr, 0.5))`` in float (README §5)."""
    x = np.float32(min(np.float32(4000.0) / np.float32(sample_rate), np.float32(0.5)))
    return np.float32(np.power(E_F, np.float32(-HALF_PI * x), dtype=np.float32))


#: :func:`note_frequency` and :func:`note_velocity` of every MIDI note / velocity, indexed by
#: traced pitch and velocity arrays (index 0 of the velocity table is unused: velocity >= 1).
_NOTE_HZ_TABLE = np.array([note_frequency(n) for n in range(128)], dtype=np.float32)
_VELOCITY_TABLE = np.array([note_velocity(max(v, 1)) for v in range(128)], dtype=np.float32)


def _note_arrays(config: ProxyConfig, batch: int, pitch, velocity) -> tuple[jax.Array, jax.Array]:
    """Pitch and velocity as int32 ``[B]`` (config's note where not given), clipped to MIDI."""
    p = jnp.full((batch,), int(config.note), jnp.int32) if pitch is None else jnp.asarray(pitch, jnp.int32)
    v = jnp.full((batch,), int(config.velocity), jnp.int32) if velocity is None else jnp.asarray(velocity, jnp.int32)
    p = jnp.broadcast_to(p, (batch,))
    v = jnp.broadcast_to(v, (batch,))
    return jnp.clip(p, 0, 127), jnp.clip(v, 1, 127)


def _mix(probs, waves):
    """Probability-weighted sum in a fixed order (equals the chosen wave for one-hot probs)."""
    out = probs[..., 0] * waves[0]
    for k in range(1, len(waves)):
        out = out + probs[..., k] * waves[k]
    return out


# ---------------------------------------------------------------------------------------
# LFO
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _full_blocks(config: ProxyConfig) -> tuple[np.ndarray, np.ndarray]:
    """Block starts and lengths up to the end of the last host buffer of a render."""
    tab = block_table(config)
    starts = list(tab.starts)
    lengths = list(tab.lengths)
    frame = int(tab.n_padded)
    while frame < tab.rendered_end:
        length = min(64, (frame // config.buffer_size + 1) * config.buffer_size - frame)
        starts.append(frame)
        lengths.append(length)
        frame += length
    return np.asarray(starts, np.int64), np.asarray(lengths, np.int64)


class _LfoPhases(NamedTuple):
    """LFO phases around each block's first sample, ``[B, NB]`` (float32, plugin-exact)."""

    rads_first: jax.Array  # sine/saw phase after the block's first increment (not wrapped)
    pulse_prev: jax.Array  # pulse phase before the block's first increment
    pulse_first: jax.Array  # pulse phase after it (wrapped at 2 pi)
    inc_first: jax.Array  # the first increment (rad)


def _lfo_block_phases(inc, lengths: np.ndarray, one, ramp_inc=None) -> _LfoPhases:
    """Bit-exact replay of the LFO phase accumulators (``Oscillator`` with a constant target).

    A scan over blocks whose body is the block's chain of float32 additions; only the first
    and last values of the chain leave the body, so XLA fuses it into one loop (~1 ms for
    1000 blocks). ``ramp_inc``: per-sample increments ``[64][B]`` of block 0 when the LFO's
    lerper starts below its target (the warm-up render), else the constant ``inc``.
    """

    tp = _k(TWO_PI, one)

    def chain(rads, lrads, incs, length):
        first = rads + incs[0]
        l_first = lrads + incs[0]
        l_first = jnp.where(l_first >= tp, l_first - tp, l_first)
        r, l = first, l_first
        for i in range(1, 64):
            keep = i < length
            r = jnp.where(keep, r + incs[i], r)
            nl = l + incs[i]
            l = jnp.where(keep, jnp.where(nl >= tp, nl - tp, nl), l)
        return (_ffmodf(r, one), l), (first, lrads, l_first)

    z = jnp.zeros_like(inc)
    incs0 = ramp_inc if ramp_inc is not None else [inc] * 64
    carry, out0 = chain(z, z, incs0, int(lengths[0]))

    def body(carry, length):
        return chain(carry[0], carry[1], [inc] * 64, length)

    _, outs = lax.scan(body, carry, jnp.asarray(lengths[1:], jnp.int32))
    fields = [jnp.concatenate([a[None], b], 0).T for a, b in zip(out0, outs)]
    inc_first = jnp.concatenate([incs0[0][:, None], jnp.broadcast_to(inc[:, None], fields[0][:, 1:].shape)], 1)
    return _LfoPhases(fields[0], fields[1], fields[2], inc_first)


def _lfo_wave(probs, rads, pulse_prev, inc, hz, noise, held, polarity, rate, one, sine):
    """LFO output (``VoiceBoard::UpdateParameter`` shapes) for phases of any common shape."""
    pw_sq = _pwrads(hz, F32(0), _k(TWO_PI / np.float32(rate), one), one)
    square, _ = _pulse_step(pulse_prev, inc, pw_sq, one)
    s_tri = _saw_shape(hz, F32(0), rate, one)
    s_saw = _saw_shape(hz, F32(1), rate, one)
    saw = _saw(rads, s_saw, one)
    waves = [sine(rads), square, _saw(rads, s_tri, one) * F32(polarity), noise, held, saw, -saw]
    return _mix(probs, waves)


def _lfo_random(seed, period, index):
    """Noise and sample-and-hold LFO values at sample ``index`` (statistical stand-ins).

    The S&H counter starts at 0, so new values arrive at multiples of ``period + 1``.
    """
    noise = _hash_uniform(seed, index)
    step = jnp.maximum(period + F32(1), F32(1)).astype(jnp.int32)
    held = _hash_uniform(seed + jnp.uint32(7919), (index // step) * step)
    return noise, held


# ---------------------------------------------------------------------------------------
# State left by the host's warm-up render
# ---------------------------------------------------------------------------------------


def _vca_output_at(x_fn, n_end, p, a0, width: int = 192):
    """VCA one-pole output at sample ``n_end - 1`` from its input ``x_fn(indices)`` (FIR)."""
    k = jnp.arange(width, dtype=jnp.int32)
    idx = n_end[:, None] - 1 - k[None, :]
    x = jnp.where(idx >= 0, x_fn(jnp.maximum(idx, 0)), F32(0))
    return jnp.sum(x * (F32(a0) * F32(p) ** k.astype(F32))[None, :], axis=-1)


class _Voice(NamedTuple):
    """Per-row constants of the voice (shared by the warm-up model and the kept render)."""

    f0: jax.Array  # opaque runtime constants (see _k)
    vel: jax.Array
    twopi_rate: jax.Array
    nyq: jax.Array
    one: jax.Array
    lfo_hz: jax.Array
    lfo_inc: jax.Array
    amp_vel: jax.Array
    lfo_seed: jax.Array
    lfo_period: jax.Array


def _targets(params: ProxyParams, v: _Voice, lfo0, no_fm: bool = False):
    """Oscillator target frequencies from a block's first LFO value (``ProcessSamplesMix``)."""
    e = lambda a: a.reshape(a.shape + (1,) * (lfo0.ndim - 1))  # noqa: E731
    a = e(params.lfo_pitch_depth)
    fm = _mul(a, lfo0 + F32(1), v.one) + F32(1) - a
    if no_fm:
        fm = jnp.ones_like(fm)
    pd = params.probs["freq_mod_osc"]
    w1 = e(pd[:, 0] + pd[:, 1])
    w2 = e(pd[:, 0] + pd[:, 2])
    f1 = e(v.f0) * (w1 * fm + (F32(1) - w1))
    f2 = e(v.f0) * e(params.osc2_detune_ratio) * e(jnp.exp2(params.osc2_octave)) * e(semitone_ratio(params.osc2_semitones))
    f2 = f2 * (w2 * fm + (F32(1) - w2))
    return f1, f2


#: ``powf(2, k / 12.f)`` for k = -12..12: amsynth's semitone factors, as glibc's powf returns them
#: (the float32 values, written exactly). XLA's exp2 differs by an ulp for 3 of the 25 values and
#: NumPy's float32 power for 5; an ulp of pitch drifts a high osc2 by ~0.004 rad over 1 s, which
#: cost 70 dB on a pulse at 3 kHz.
_SEMITONE_RATIOS = np.array([
    0.5,
    0.5297315120697021,
    0.5612310171127319,
    0.5946035385131836,
    0.6299605369567871,
    0.6674199104309082,
    0.7071067690849304,
    0.7491535544395447,
    0.7937005162239075,
    0.8408964276313782,
    0.8908987045288086,
    0.9438742995262146,
    1.0,
    1.0594631433486938,
    1.1224620342254639,
    1.1892070770263672,
    1.2599210739135742,
    1.3348398208618164,
    1.4142135381698608,
    1.4983071088790894,
    1.587401032447815,
    1.6817928552627563,
    1.7817974090576172,
    1.8877485990524292,
    2.0
], dtype=np.float32)


def semitone_ratio(semitones):
    """``2^(s/12)``: the plugin's exact float for integer ``s``, smooth in between."""
    k = jnp.clip(jnp.round(semitones), -12, 12)
    frac = semitones - k
    return jnp.asarray(_SEMITONE_RATIOS)[(k + 12).astype(jnp.int32)] * jnp.exp2(frac / F32(12))


def _amp_lfo_factor(params: ProxyParams, lfo):
    a = params.lfo_amp_depth.reshape(params.lfo_amp_depth.shape + (1,) * (lfo.ndim - 1))
    return (lfo * F32(0.5) + F32(0.5)) * a + F32(1) - a


class _Warm(NamedTuple):
    """What the host's warm-up render leaves behind (see :func:`_warm_silence`)."""

    n_warm: jax.Array  # samples the warm-up processed (the voice then fell silent), [B] int32
    last_block: jax.Array  # index of its last processed block, [B]
    vca_z: jax.Array  # VCA one-pole state, [B]
    lfo_det: jax.Array  # warm-up LFO at every block start, noise shapes at 0, [B, NB]


def _warm_silence(params: ProxyParams, config: ProxyConfig, v: _Voice) -> _Warm:
    """When the host's warm-up render stops processing the voice, and its VCA state then.

    The warm-up plays the same note after a pre-roll (note held) with the LFO at 0 Hz and no
    pitch modulation. Its voice is processed block by block until it falls silent (amp
    envelope off and VCA one-pole below 1e-7 at a block start) or the last host buffer ends.
    The warm-up LFO's lerper ramps up from 0 Hz over its first block (exact replay).
    """
    tab = block_table(config)
    sr = config.sample_rate
    starts, lengths = _full_blocks(config)
    vp = vca_pole(sr)
    a0 = np.float32(1) - vp
    one = v.one
    lag = 32.5  # the warm-up LFO's phase lags 32.5 samples (its first block ramps from 0 Hz)

    env_full = dsenv.adsr(params.amp_attack_s, params.amp_decay_s, params.amp_sustain,
                          params.amp_release_s, tab.rendered_end, sr, note_on=0, note_off=tab.note_off)

    def amp_at(idx):
        """VCA input near the end of the warm-up (ideal LFO phase; LFO noise from the hash)."""
        env = jnp.take_along_axis(env_full, jnp.minimum(idx, env_full.shape[1] - 1), axis=1)
        rads = jnp.mod(v.lfo_inc[:, None] * jnp.maximum(idx.astype(F32) + F32(1 - lag), F32(0)), TWO_PI)
        noise, held = _lfo_random(v.lfo_seed[:, None], v.lfo_period[:, None], idx)
        lfo = _lfo_wave(params.probs["lfo_waveform"][:, None, :], rads, rads - v.lfo_inc[:, None],
                        v.lfo_inc[:, None], v.lfo_hz[:, None], noise, held, config.lfo_polarity, sr, one, _fast_sin)
        return env * v.amp_vel[:, None] * _amp_lfo_factor(params, lfo) * params.master_gain[:, None]

    fr = jnp.floor(params.amp_release_s * F32(sr)).astype(jnp.int32)
    if tab.note_off < tab.rendered_end:
        n_end = jnp.int32(tab.note_off) + fr
    else:
        n_end = jnp.full(fr.shape, tab.rendered_end + 1, jnp.int32)
    z_end = F32(vp) * _vca_output_at(amp_at, jnp.minimum(n_end, tab.rendered_end), vp, a0)
    s_np = jnp.asarray(starts, jnp.int32)
    j = (s_np[None, :] - n_end[:, None]).astype(F32)
    z_at = z_end[:, None] * jnp.exp(jnp.maximum(j, 0) * F32(np.log(vp)))
    silent = (j >= 0) & (z_at < F32(1e-7))
    any_silent = jnp.any(silent, axis=1)
    first = jnp.argmax(silent, axis=1)
    n_warm = jnp.where(any_silent, s_np[first], jnp.int32(tab.rendered_end))
    last_block = jnp.maximum(jnp.where(any_silent, first - 1, len(starts) - 1), 0)
    vca_z = F32(vp) * _vca_output_at(amp_at, n_warm, vp, a0)

    hz_t = jnp.minimum(v.lfo_hz, v.nyq)
    step = _div(hz_t - F32(0), _k(int(lengths[0]), one))
    ramp = [_mul(v.twopi_rate, F32(0) + _mul(step, _k(i, one), one), one) for i in range(64)]
    ph = _lfo_block_phases(v.lfo_inc, lengths, one, ramp_inc=ramp)
    zero = jnp.zeros_like(ph.rads_first)
    lfo_det = _lfo_wave(params.probs["lfo_waveform"][:, None, :], ph.rads_first, ph.pulse_prev, ph.inc_first,
                        hz_t[:, None], zero, zero, config.lfo_polarity, sr, one, lambda x: _sin_accurate(x, one))
    return _Warm(n_warm, last_block, vca_z, lfo_det)


def _warm_targets(params: ProxyParams, config: ProxyConfig, v: _Voice, warm: _Warm, lfo_warm):
    """Oscillator lerpers' last targets and the osc2 sync accumulator after the warm-up.

    ``lfo_warm``: the warm-up LFO at its block starts ``[B, NB]`` (noise shapes included).
    The sync accumulator sums the pre-roll (notes held, plain note frequency) and every
    processed warm-up block, mod 2 pi, in double-float. Returns ``[B]`` each:
    ``f1_prev, f2_prev, s_hi, s_lo``.
    """
    starts, lengths = _full_blocks(config)
    one = v.one
    lfo_last = jnp.take_along_axis(lfo_warm, warm.last_block[:, None], axis=1)[:, 0]
    f1_prev, f2_prev = _targets(params, v, lfo_last)
    f1_prev = jnp.minimum(f1_prev, v.nyq)
    f2_prev = jnp.minimum(f2_prev, v.nyq)
    f1_pre, _ = _targets(params, v, jnp.zeros_like(lfo_last), no_fm=True)
    inc_pre = v.twopi_rate * f1_pre
    f1_b, _ = _targets(params, v, lfo_warm)
    inc_b = v.twopi_rate * f1_b  # [B, NB]
    used = jnp.asarray(starts, jnp.int32)[None, :] < warm.n_warm[:, None]
    qh, ql = _two_prod(inc_b, jnp.broadcast_to(jnp.asarray(lengths, F32)[None, :], inc_b.shape), one)
    qh = jnp.where(used, qh, F32(0))
    ql = jnp.where(used, ql, F32(0))
    ph_, pl_ = _two_prod(inc_pre, jnp.full_like(inc_pre, F32(config.preroll_samples)), one)
    hi = jnp.concatenate([qh, ph_[:, None]], 1)
    lo = jnp.concatenate([ql, pl_[:, None]], 1)
    s_hi, s_lo = _dd_mod_two_pi(*_dd_sum(hi, lo), one)
    return f1_prev, f2_prev, s_hi, s_lo


def _preroll_lengths(config: ProxyConfig) -> np.ndarray:
    """Sub-block lengths of the host's pre-roll render (note held throughout)."""
    out, frame, buf = [], 0, int(config.buffer_size)
    while frame < config.preroll_samples:
        length = min(64, (frame // buf + 1) * buf - frame, config.preroll_samples - frame)
        out.append(length)
        frame += length
    return np.asarray(out, np.int64)


def _random_kinds(probs) -> jax.Array:
    """``[3, B]`` kind of random source (none / noise / S&H) of the LFO, osc1 and osc2."""
    lfo = jnp.argmax(probs["lfo_waveform"], -1)
    o1 = jnp.argmax(probs["osc1_waveform"], -1)
    o2 = jnp.argmax(probs["osc2_waveform"], -1)
    kind = lambda k, noise, sh: jnp.where(k == noise, lcg.NOISE, jnp.where(k == sh, lcg.SAMPLE_HOLD, lcg.NONE))  # noqa: E731
    return jnp.stack([kind(lfo, 3, 4), kind(o1, 3, 4), kind(o2, 3, 4)]).astype(jnp.int32)


# ---------------------------------------------------------------------------------------
# Voice
# ---------------------------------------------------------------------------------------

def render_mono_voice(params: ProxyParams, config: ProxyConfig, key=None, pitch=None, velocity=None) -> jax.Array:
    """The voice (LFO, oscillators, mixer, filter, VCA) before the master section.

    Block-rate quantities (LFO value at block starts, pitch targets, lerpers, pulse width and
    saw shape, S&H periods, cutoff and biquad coefficients) are computed for all blocks at
    once. Two ``lax.scan`` over samples run what is sequential: the oscillator phase
    accumulators (float32, plugin order), the sync accumulator and the two ADSRs; then, after
    the waveforms and the mixer (vectorised), the biquads and the VCA one-pole.

    Args:
      params: :class:`ProxyParams` with batch ``B``.
      config: static :class:`ProxyConfig`.
      key: PRNG key for the noise waveforms (None: a fixed key).
      pitch, velocity: MIDI note and velocity per row, int ``[B]`` (traced: one compilation serves
        every note); None plays ``config.note`` / ``config.velocity``.
    Returns:
      Mono voice output ``[B, n_padded]`` (float32; includes master volume).
    """
    tab = block_table(config)
    sr = int(config.sample_rate)
    T = tab.n_padded
    P = params.probs
    B = params.amp_sustain.shape[0]
    one = _opaque_one(params.amp_sustain)
    twopi_rate = _k(TWO_PI / np.float32(sr), one)
    nyq = _k(np.float32(sr) / np.float32(2), one)
    if key is None:
        key = jax.random.PRNGKey(0)
    seeds = jax.random.randint(key, (4, B), 1, 2**31 - 1, dtype=jnp.int32).astype(jnp.uint32)
    lfo_hz_t = jnp.minimum(params.lfo_hz, nyq)
    lfo_inc = _mul(twopi_rate, lfo_hz_t, one)
    pitch, velocity = _note_arrays(config, B, pitch, velocity)
    vel = jnp.asarray(_VELOCITY_TABLE)[velocity] * one  # [B], opaque runtime values (see _k)
    v = _Voice(
        f0=jnp.asarray(_NOTE_HZ_TABLE)[pitch] * one, vel=vel, twopi_rate=twopi_rate, nyq=nyq, one=one,
        lfo_hz=params.lfo_hz, lfo_inc=lfo_inc,
        amp_vel=F32(1) * (F32(1) - params.amp_vel_sens) + vel * params.amp_vel_sens,
        lfo_seed=seeds[3], lfo_period=_sh_period(lfo_hz_t, sr),
    )

    # ---- envelopes: closed form here (it carries the gradients); the values are replaced by
    # the plugin-exact float32 replay that runs in the oscillator scan (README §6.6)
    amp_env_cf = dsenv.adsr(params.amp_attack_s, params.amp_decay_s, params.amp_sustain,
                            params.amp_release_s, T, sr, note_on=0, note_off=tab.note_off)  # [B, T]
    filt_env_cf = dsenv.adsr(params.filter_attack_s, params.filter_decay_s, params.filter_sustain,
                             params.filter_release_s, T, sr, note_on=0, note_off=tab.note_off)

    # ---- LFO: exact phases at block starts (noise shapes added below), then per sample. The
    # exact float32 replay carries no gradient; the ideal phase ``(n + 1) inc`` lends it one.
    sg = lax.stop_gradient
    ph = _lfo_block_phases(sg(lfo_inc), tab.lengths, one)
    n1 = jnp.asarray(tab.starts + 1, F32)[None, :]
    ideal = lfo_inc[:, None] * n1
    ph = ph._replace(rads_first=ph.rads_first + (ideal - sg(ideal)), pulse_first=ph.pulse_first + (ideal - sg(ideal)),
                     pulse_prev=ph.pulse_prev + (ideal - sg(ideal)))
    pl = P["lfo_waveform"][:, None, :]
    zero_b = jnp.zeros_like(ph.rads_first)
    lfo_det = _lfo_wave(pl, ph.rads_first, ph.pulse_prev, ph.inc_first, lfo_hz_t[:, None], zero_b, zero_b,
                        config.lfo_polarity, sr, one, lambda x: _sin_accurate(x, one))  # [B, NB]
    idx = jnp.asarray(tab.index, F32)[None, :]
    rads_t = expand_blocks(ph.rads_first, config) + idx * lfo_inc[:, None]
    pulse_t = expand_blocks(ph.pulse_first, config) + (idx - F32(1)) * lfo_inc[:, None]
    pulse_t = jnp.where(pulse_t >= TWO_PI, pulse_t - TWO_PI, pulse_t)
    pulse_t = jnp.where(idx == 0, expand_blocks(ph.pulse_prev, config), pulse_t)

    # ---- what the warm-up render leaves; the noise sources (README §6.3, proxies.amsynth.noise)
    # (no gradient through the warm-up model: it only sets initial states)
    warm = jax.tree_util.tree_map(sg, _warm_silence(params, config, v)) if config.warm_start else None
    p_lfo_noise, p_lfo_sh = P["lfo_waveform"][:, 3], P["lfo_waveform"][:, 4]
    pn_sg, psh_sg = sg(p_lfo_noise), sg(p_lfo_sh)

    def sh_periods(lfo0, no_fm=False):
        f1, f2 = _targets(params, v, lfo0, no_fm=no_fm)
        return (_sh_period(jnp.minimum(f1, nyq), sr).astype(jnp.int32),
                _sh_period(jnp.minimum(f2, nyq), sr).astype(jnp.int32))

    lfo_period_i = v.lfo_period.astype(jnp.int32)
    kinds = _random_kinds(P)
    T_ = T

    def replay(_):
        counter = lcg._Counter(jnp.zeros((B,), jnp.int32), jnp.zeros((B,), F32))
        state = (lcg.seed_state(B), (counter, counter, counter))
        pre = _preroll_lengths(config)
        state, _ = lcg.replay_blocks(state, kinds, pre, jnp.ones((B, len(pre)), bool), jnp.full((B,), -1, jnp.int32),
                                     jnp.zeros((B, len(pre)), F32), pn_sg, psh_sg,
                                     lambda l0: sh_periods(l0, no_fm=True))
        if warm is not None:
            starts_full, lengths_full = _full_blocks(config)
            active = jnp.asarray(starts_full, jnp.int32)[None, :] < warm.n_warm[:, None]
            state, nbw = lcg.replay_blocks(state, kinds, lengths_full, active, lfo_period_i, warm.lfo_det,
                                           pn_sg, psh_sg, sh_periods)
            lfo_warm = nbw.lfo0
        else:
            lfo_warm = jnp.zeros((B, len(_full_blocks(config)[0])), F32)
        _, nbk = lcg.replay_blocks(state, kinds, tab.lengths, jnp.ones((B, len(tab.lengths)), bool), lfo_period_i,
                                   lfo_det, pn_sg, psh_sg, sh_periods)
        p1, p2 = sh_periods(nbk.lfo0)
        values = lcg.per_sample_values(nbk, kinds, lfo_period_i, p1, p2, lambda a: expand_blocks(a, config), tab.index)
        return nbk.lfo0, lfo_warm, values

    def hashed(_):
        starts = jnp.asarray(tab.starts, jnp.int32)[None, :]
        noise_b, held_b = _lfo_random(v.lfo_seed[:, None], v.lfo_period[:, None], starts)
        lfo0 = lfo_det + p_lfo_noise[:, None] * noise_b + p_lfo_sh[:, None] * held_b
        lfo_warm = warm.lfo_det if warm is not None else jnp.zeros((B, len(_full_blocks(config)[0])), F32)
        t = jnp.arange(T_, dtype=jnp.int32)[None, :]
        noise_t, held_t = _lfo_random(v.lfo_seed[:, None], v.lfo_period[:, None], t)
        return lfo0, lfo_warm, (p_lfo_noise[:, None] * noise_t + p_lfo_sh[:, None] * held_t, None, None)

    if config.noise == "replay":
        # the bookkeeping carries no gradient; lfo_det lends lfo0 its own
        lfo_det_sg, lfo_det_in = sg(lfo_det), lfo_det
        lfo_det = lfo_det_sg
        lfo0, lfo_warm, rnd = lax.cond(jnp.any(kinds != lcg.NONE), replay,
                                       lambda _: (lfo_det, warm.lfo_det if warm is not None else
                                                  jnp.zeros((B, len(_full_blocks(config)[0])), F32),
                                                  (jnp.zeros((B, T), F32),) * 3), None)
        lfo_rnd_t = rnd[0]
        lfo0 = lfo0 + (lfo_det_in - lfo_det_sg)
    elif config.noise == "random":
        lfo0, lfo_warm, rnd = hashed(None)
        lfo_rnd_t = rnd[0]
    else:
        raise ValueError(f"ProxyConfig.noise must be 'replay' or 'random', got {config.noise!r}")
    # per-sample LFO (the VCA reads it every sample): noise/S&H shapes from their values
    lfo_t = _lfo_wave(pl, rads_t, pulse_t, lfo_inc[:, None], lfo_hz_t[:, None], jnp.zeros_like(rads_t),
                      jnp.zeros_like(rads_t), config.lfo_polarity, sr, one, _fast_sin)
    if config.noise == "replay":
        lfo_t = lfo_t + (p_lfo_noise + p_lfo_sh)[:, None] * lfo_rnd_t
    else:
        lfo_t = lfo_t + lfo_rnd_t

    if warm is not None:
        f1_prev, f2_prev, s0_hi, s0_lo = map(sg, _warm_targets(params, config, v, warm, sg(lfo_warm)))
        vca_z0 = warm.vca_z
    else:
        f1_prev = f2_prev = vca_z0 = s0_hi = s0_lo = jnp.zeros((B,), F32)

    # ---- block-rate quantities [B, NB]
    f1, f2 = _targets(params, v, lfo0)
    sync_inc = twopi_rate * f1  # the unclamped osc1 target drives the sync accumulator
    f1t = jnp.minimum(f1, nyq)
    f2t = jnp.minimum(f2, nyq)
    f1_start = jnp.concatenate([f1_prev[:, None], f1t[:, :-1]], 1)
    f2_start = jnp.concatenate([f2_prev[:, None], f2t[:, :-1]], 1)
    L = jnp.asarray(tab.lengths, F32)[None, :] * one
    e = lambda a: a[:, None]  # noqa: E731
    blocks = dict(
        f1_start=f1_start, f1_inc=_div(f1t - f1_start, L), f2_start=f2_start, f2_inc=_div(f2t - f2_start, L),
        sync_inc=sync_inc,
        pw1=_pwrads(f1t, e(params.osc1_shape), twopi_rate, one), pw2=_pwrads(f2t, e(params.osc2_shape), twopi_rate, one),
        s1=_saw_shape(f1t, e(params.osc1_shape), sr, one), s2=_saw_shape(f2t, e(params.osc2_shape), sr, one),
        sh1=_sh_period(f1t, sr), sh2=_sh_period(f2t, sr),
    )
    blocks = {k: jnp.broadcast_to(val, f1.shape) for k, val in blocks.items()}

    # ---- per-sample oscillator increments (Lerper: start + inc * i, then 2 pi / sr * f)
    bid = jnp.asarray(tab.block_id, jnp.int32)
    idx_t = jnp.asarray(tab.index, F32)[None, :]
    g = lambda name: expand_blocks(blocks[name], config)  # noqa: E731
    inc1 = _mul(twopi_rate, g("f1_start") + _mul(g("f1_inc"), idx_t, one), one)
    inc2 = _mul(twopi_rate, g("f2_start") + _mul(g("f2_inc"), idx_t, one), one)
    envs = [_adsr_constants(getattr(params, f"{n}_attack_s"), getattr(params, f"{n}_decay_s"),
                            getattr(params, f"{n}_sustain"), getattr(params, f"{n}_release_s"), sr, one)
            for n in ("amp", "filter")]
    ph = _oscillator_phases(inc1, inc2, expand_blocks(sync_inc, config), jnp.asarray(tab.is_end), s0_hi, s0_lo,
                            envs, tab.note_off, one)
    sg = lax.stop_gradient
    amp_env = sg(ph.amp_env) + (amp_env_cf - sg(amp_env_cf))
    filt_env = sg(ph.filter_env) + (filt_env_cf - sg(filt_env_cf))
    amp_in = amp_env * v.amp_vel[:, None] * _amp_lfo_factor(params, lfo_t) * params.master_gain[:, None]

    # ---- cutoff and biquad coefficients per block (filter envelope at the block's last sample)
    env_f = filt_env[:, tab.starts + tab.lengths - 1]  # [B, NB]
    a_f = e(params.lfo_cutoff_depth)
    kt = e(params.filter_key_track)
    vs = e(params.filter_vel_sens)
    E = e(params.filter_env_amount)
    base = KEYTRACK_BASE_HZ * (F32(1) - kt) + e(v.f0) * kt
    cut = e(params.filter_cutoff_mult) * base * (F32(1) * (F32(1) - vs) + e(vel) * vs) * (
        (lfo0 * F32(0.5) + F32(0.5)) * a_f + F32(1) - a_f)
    cut = jnp.where(E > 0, cut + e(v.f0) * env_f * E, cut + cut * F32(1.0 / 16.0) * E * env_f)
    cut = jnp.maximum(jnp.minimum(cut, nyq * F32(0.99)), F32(10))
    res_r = jnp.maximum(F32(0.001), F32(1) / params.filter_q)
    # bypass returns the buffer untouched (README §6.5): it is mixed in after the sections, not
    # as a numerator equal to the denominator (with per-block coefficients that is no identity:
    # the state carries transients across a cutoff change)
    p_bypass = P["filter_type"][:, 4]
    kinds_w = P["filter_type"] * jnp.asarray([1, 1, 1, 1, 0], F32)
    coef = dsfilt.biquad_coefficients_mixture(kinds_w[:, None, :], cut, e(res_r), sr)
    blocks.update(b0=coef.b0, b01=coef.b01, b012=coef.b012, a1p2=coef.a1p2, a012=coef.a012)

    # ---- waveforms (README §6.3) and the mixer, vectorised
    t_idx = jnp.arange(T, dtype=jnp.int32)[None, :]
    p_sync = (P["osc2_sync"][:, 1] * (P["osc1_waveform"][:, 0] + P["osc1_waveform"][:, 2]))[:, None]

    def osc(probs, rads, lprev, inc, pw, shape, noise, held):
        pulse, _ = _pulse_step(lprev, inc, pw, one)
        return _mix(probs[:, None, :], [_fast_sin(rads), pulse, _saw(rads, shape, one), noise, held])

    if config.noise == "replay":  # the replayed value is the noise sample or the held S&H value
        n1 = h1 = rnd[1]
        n2 = h2 = rnd[2]
    else:
        n1 = _hash_uniform(seeds[0][:, None], t_idx)
        n2 = _hash_uniform(seeds[1][:, None], t_idx)
        h1 = _hash_uniform(seeds[0][:, None] + jnp.uint32(104729), _sample_hold_index(g("sh1")))
        h2 = _hash_uniform(seeds[1][:, None] + jnp.uint32(104729), _sample_hold_index(g("sh2")))
    o1 = osc(P["osc1_waveform"], ph.rads1, ph.lprev1, inc1, g("pw1"), g("s1"), n1, h1)
    o2_free = osc(P["osc2_waveform"], ph.rads2, ph.lprev2, inc2, g("pw2"), g("s2"), n2, h2)
    o2_sync = osc(P["osc2_waveform"], ph.rads2s, ph.lprev2s, inc2, g("pw2"), g("s2"), n2, h2)
    o2 = (F32(1) - p_sync) * o2_free + p_sync * o2_sync
    r_ring = params.ring_mod[:, None]
    m_mix = params.osc_mix[:, None]
    osc1vol = (F32(1) - r_ring) * (F32(1) - m_mix) / F32(2)
    osc2vol = (F32(1) - r_ring) * (F32(1) + m_mix) / F32(2)
    x = osc1vol * o1 + osc2vol * o2 + r_ring * o1 * o2

    # ---- filter (two identical sections, 12/24 dB mixed) and VCA one-pole: one light scan
    coefs = jnp.stack([blocks[k] for k in ("b0", "b01", "b012", "a1p2", "a012")], 0)  # [5, B, NB]
    return _filter_vca(x, coefs, bid, P["filter_slope"], p_bypass, amp_in, vca_z0, sr)


class _Phases(NamedTuple):
    rads1: jax.Array
    lprev1: jax.Array
    rads2: jax.Array
    lprev2: jax.Array
    rads2s: jax.Array
    lprev2s: jax.Array
    amp_env: jax.Array
    filter_env: jax.Array


def _sample_hold_index(period):
    """Refresh count of the S&H oscillator per sample, ``[B, T]`` (int32), from the per-sample
    ``(int)(sr / f)`` period: a new value every ``period + 1`` samples (``count > period``).

    A counting phase ``sum 1/(period + 1)`` instead of the plugin's integer counter (whose start
    persists across renders and is unknowable): exact in rhythm for a constant period, close
    under pitch modulation. S&H is noise; it is compared spectrally.
    """
    rate = F32(1) / jnp.maximum(period + F32(1), F32(1))
    return jnp.floor(jnp.cumsum(rate, axis=-1)).astype(jnp.int32)


class _AdsrConst(NamedTuple):
    frames: jax.Array  # [3, B] int32: attack, decay, release segment lengths
    sustain: jax.Array
    attack_target: jax.Array


def _adsr_constants(attack_s, decay_s, sustain, release_s, sample_rate, one) -> _AdsrConst:
    """``(int)(T * sr)`` frame counts (float32 product, truncated) and the attack target."""
    sr = _k(sample_rate, one)
    frames = jnp.stack([jnp.floor(t * sr) for t in (attack_s, decay_s, release_s)]).astype(jnp.int32)
    target = jnp.where(decay_s <= _k(0.0005, one), sustain, F32(1))
    return _AdsrConst(jnp.maximum(frames, 1), sustain, target)


_ATTACK, _DECAY, _SUSTAIN, _RELEASE, _OFF = range(5)


def _adsr_step(state, t, note_off: int, k: _AdsrConst, one):
    """One sample of amsynth's ``ADSR::process`` (output, then advance; float32 as the plugin)."""
    stage, left, value, inc, z = state
    release_now = t == note_off
    stage = jnp.where(release_now, _RELEASE, stage)
    left = jnp.where(release_now, k.frames[2], left)
    inc = jnp.where(release_now, (F32(0) - value) / k.frames[2].astype(F32), inc)
    out = value
    z_new = z + _mul(k.sustain - z, _k(0.005, one), one)
    value = jnp.where(stage == _SUSTAIN, z_new, jnp.where(stage == _OFF, value, value + inc))
    z = jnp.where(stage == _SUSTAIN, z_new, z)
    moving = (stage != _SUSTAIN) & (stage != _OFF)
    left = jnp.where(moving, left - 1, left)
    done = moving & (left == 0)
    to_decay = done & (stage == _ATTACK)
    to_sustain = done & (stage == _DECAY)
    to_off = done & (stage == _RELEASE)
    inc = jnp.where(to_decay, (k.sustain - value) / k.frames[1].astype(F32), inc)
    left = jnp.where(to_decay, k.frames[1], left)
    z = jnp.where(to_sustain, value, z)
    value = jnp.where(to_off, F32(0), value)
    inc = jnp.where(to_sustain | to_off, F32(0), inc)
    stage = jnp.where(to_decay, _DECAY, jnp.where(to_sustain, _SUSTAIN, jnp.where(to_off, _OFF, stage)))
    return (stage, left, value, inc, z), out


def _oscillator_phases(inc1, inc2, sync_inc, is_end, s0_hi, s0_lo, envs, note_off, one) -> _Phases:
    """The sequential part of the voice, sample by sample in float32 (one ``lax.scan``).

    Per oscillator: the sine/saw phase (``rads += inc``, wrapped at block ends), the pulse
    phase (wrapped at its rising edge); osc2 twice, free-running and hard-synced to the
    float64 sync accumulator (emulated as a float32 pair). Also the two ADSRs (float32
    accumulation exactly as the plugin's; note-on at sample 0). Returns per-sample ``[B, T]``:
    sine/saw phase after the increment, pulse phase before it (after a sync reset), the
    envelopes.
    """
    B = inc1.shape[0]
    zf = jnp.zeros((B,), F32)
    tp = _k(TWO_PI, one)

    def step(c, xs):
        t, i1, i2, si, end = xs
        r1, l1, r2, l2, r2s, l2s, s_hi, s_lo, env_a, env_f = c
        s_hi, s_lo = _dd_add(s_hi, s_lo, si)
        wrap = (s_hi > tp) | ((s_hi == tp) & (s_lo >= 0))
        s_hi, s_lo = _dd_add(jnp.where(wrap, s_hi - tp, s_hi), s_lo, F32(0))
        l2s = jnp.where(wrap, F32(0), l2s)
        r1n, r2n = r1 + i1, r2 + i2
        r2sn = jnp.where(wrap, F32(0), r2s) + i2
        pulse = lambda l, i: jnp.where(l + i >= tp, (l + i) - tp, l + i)  # noqa: E731
        env_a, out_a = _adsr_step(env_a, t, note_off, envs[0], one)
        env_f, out_f = _adsr_step(env_f, t, note_off, envs[1], one)
        wrap_end = lambda r: jnp.where(end, _ffmodf(r, one), r)  # noqa: E731
        carry = (wrap_end(r1n), pulse(l1, i1), wrap_end(r2n), pulse(l2, i2), wrap_end(r2sn), pulse(l2s, i2),
                 s_hi, s_lo, env_a, env_f)
        return carry, (r1n, l1, r2n, l2, r2sn, l2s, out_a, out_f)

    def env0(k: _AdsrConst):
        inc = (k.attack_target - F32(0)) / k.frames[0].astype(F32)
        return (jnp.full((B,), _ATTACK, jnp.int32), k.frames[0], zf, inc, zf)

    T = inc1.shape[1]
    xs = (jnp.arange(T, dtype=jnp.int32), inc1.T, inc2.T, sync_inc.T, is_end)
    carry0 = (zf, zf, zf, zf, zf, zf, s0_hi, s0_lo, env0(envs[0]), env0(envs[1]))
    _, out = lax.scan(step, carry0, xs)
    return _Phases(*(o.T for o in out))


def _filter_vca(x, coefs, bid, p_slope, p_bypass, amp_in, vca_z0, sample_rate):
    """Biquad sections (delta-form TDF-II, coefficients per block) and the VCA one-pole.

    ``coefs`` hold the mixture of the filtering kinds (bypass weight 0); the bypass weight
    ``p_bypass`` ``[B]`` adds the input itself (exact mode: the untouched buffer).

    TODO(diffsynth.filters): a block-parallel biquad for variable-length blocks (amsynth's
    grid is split at the note-off) would replace this per-sample scan.
    """
    vp = vca_pole(sample_rate)
    va0 = np.float32(np.float32(1) - vp)
    B = x.shape[0]
    zf = jnp.zeros((B,), F32)
    coefs_t = jnp.transpose(coefs, (2, 0, 1))  # [NB, 5, B]

    def step(c, xs):
        b, xi, ai = xs
        fp1, fq1, fp2, fq2, z = c
        b0, b01, b012, a1p2, a012 = coefs_t[b]
        y1 = b0 * xi + fp1
        fp1, fq1 = y1 + fq1 + b01 * xi - a1p2 * y1, fq1 + b012 * xi - a012 * y1
        y2 = b0 * y1 + fp2
        fp2, fq2 = y2 + fq2 + b01 * y1 - a1p2 * y2, fq2 + b012 * y1 - a012 * y2
        gain = ai * va0 + z
        out = (p_slope[:, 0] * y1 + p_slope[:, 1] * y2 + p_bypass * xi) * gain
        return (fp1, fq1, fp2, fq2, gain * vp), out

    _, out = lax.scan(step, (zf, zf, zf, zf, vca_z0), (bid, x.T, amp_in.T))
    return out.T


# ---------------------------------------------------------------------------------------
# Master section
# ---------------------------------------------------------------------------------------


def master_section(mono, params: ProxyParams, config: ProxyConfig) -> jax.Array:
    """Distortion -> reverb (dry gain 2 - wet) -> limiter on the mono voice sum, ``[B, 2, T]``.

    README §7: ``sign(x)|x|^c`` (crunch smoother converged), pan (1, 1), Freeverb called
    in place with ``processmix`` (rectifying clamps, scalewet = scaledry = 1, converged
    gain smoothers; the host leaves the delay lines empty and the comb stores at 0), and
    the stereo-linked soft limiter starting from a zero peak.
    """
    x = dsfx.power_distortion(mono, params.distortion_exponent[:, None])
    wet = params.reverb_wet
    # the calibration gives the comb damping itself (amsynth: control x 0.4, so at most 0.4)
    left, right = dsfx.freeverb(x, x, config.sample_rate, params.reverb_room, params.reverb_damp, wet,
                                F32(1) - wet, params.reverb_width, room_scale=1.0, room_offset=0.0,
                                damp_scale=1.0, max_damp=0.4)
    left, right = dsfx.peak_limiter(left, right, config.sample_rate)
    return jnp.stack([left, right], axis=1)


def render(params: ProxyParams, config: ProxyConfig = ProxyConfig(), key=None, pitch=None,
           velocity=None) -> jax.Array:
    """Render one note per batch row: stereo ``[B, 2, n_samples]`` float32.

    ``pitch`` / ``velocity``: int ``[B]`` MIDI note and velocity per row (traced arrays: one
    compilation serves every note); None plays ``config.note`` / ``config.velocity``. Jit with
    ``config`` static: ``jax.jit(render, static_argnums=1)``.
    """
    tab = block_table(config)
    mono = render_mono_voice(params, config, key, pitch, velocity)
    return master_section(mono, params, config)[:, :, : tab.n_samples]
