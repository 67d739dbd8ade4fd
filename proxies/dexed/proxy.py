"""A JAX proxy of the Dexed "Mark I" FM engine that dexed-py 0.3.0 runs: exact and relaxed modes.

Everything follows ``shared/dexed/README.md`` (the measured spec) and, for operation order and
integer widths, the msfa / EngineMkI source it was checked against (``Dx7Note``, ``Env``,
``PitchEnv``, ``Lfo``, ``Freqlut``, ``Sin``, ``EngineMkI``). Input: a DX7 voice as the 155 VCED
values (``[B, 155]``, VCED byte order: OP6's block first, README section 3), a MIDI note
``pitch [B]`` and a ``velocity [B]`` (both traced: one compiled function serves every note), and
a static :class:`proxies.synth.ProxyRender`. Output: mono ``[B, 1, n_samples]`` float32 on
dexed-py's scale (``int32 mix / 2^25``, no clipping). The note is released at
:func:`proxies.synth.note_off_sample` ``(hold_s, sr, NoteConvention(64, "ceil"))``, a 64-sample
block boundary: where dexed-py releases it (it rounds ``note_duration sr`` up to a block;
:mod:`proxies.dexed.engine` passes it a duration that lands on that boundary).

Structure (both modes)::

    voice init (KLS, velocity, rate scaling, base pitch: Dx7Note::init)      once per note
    control path, one step per 64-sample block: a lax.scan for the state (keyup, LFO phase /
        S&H / delay, pitch EG, six operator EGs with static holds), then vectorised over
        blocks: PMD/PMS, AMD/AMS, Freqlut, gain targets, skip flags, gain ramps
        -> per block and operator: phase increment, gain ramp (start, step), skip flag
    FM kernel: the algorithm as data (a routing matrix M, carriers C, feedback target /
        source), the operators in engine order OP6..OP1.

**Exact mode** (:func:`render_exact`, integer VCED input) is the engine's integer arithmetic
line by line: int32 / uint32 wrap-around and arithmetic shifts; the per-sample-rate tables built
as the C++ builds them (``Freqlut`` with its int32 overflow below 16384 Hz, the EG increment and
static-hold tables with the ``(44100/sr)^2`` hold bug, ``Lfo``'s rate and delay increments,
``PitchEnv``'s unit, msfa ``Sin`` for the LFO sine); the detune's double-precision expression
as a [note, detune] table; 64-bit products as exact uint32 limb arithmetic (no x64 mode); the
AMS ``exp()`` as an exact fixed-point table product; the MkI log-sine / exp tables, 12-bit
phase, 13-bit mantissa and one-LSB negative offset; the gain ramp ``(g2 - g1 + 32) >> 6``; the
skip rule (an operator with A < 25 at both block ends outputs nothing, a skipped feedback
operator keeps its history); feedback ``(y[n-1] + y[n-2]) >> (s + 1)`` with the +2 shift of
DX7 algorithms 4, 6 and 32 (``normalize_feedback=True`` drops it, as dexed-py's switch does);
the 3- and 2-operator loops of algorithms 4 and 6 (block-end gains, computed whenever OP6 is).
EngineMkI's bus machine (overwrite / add flags, an "empty" bus after a skipped writer) equals
a 0/1 routing matrix in which a skipped operator outputs 0 (:data:`ROUTE_M`, derived from the
flag bytes). The feedback target is never modulated by another operator, so the kernel runs it
(with its loop for algorithms 4 / 6) as a per-sample ``lax.scan`` and every other operator
vectorised over all samples. Result: **bit-identical** to dexed-py (figures below).

**Relaxed mode** (:func:`render_relaxed`: continuous VCED values + probabilities;
:class:`DexedControls` with ``probs``):

* **Control signals: "exact at the rounded voice + smooth residual".** Per block and operator,
  ``log-gain = g_exact(round(v)) + [g_smooth(v) - g_smooth(round(v))]`` and
  ``log-frequency = lf_exact(round(v)) + [lf_smooth(v) - lf_smooth(round(v))]`` (the phase
  advances by the exact increment times ``2^residual``). On the integer grid the relaxed
  control signals are the exact ones; off the grid they move continuously (with jumps of the
  surrogate's error where a value crosses a rounding boundary); every gradient is the smooth
  surrogate's. The surrogate (:func:`_smooth_controls`, float32, the same block scan and stage
  logic) uses:

  - output level and EG levels: ``scaleoutlevel`` piecewise-linear in the value; the EG target
    ``32 sol(L)`` instead of ``64 (sol(L) >> 1)`` (the 1.5 dB level pairs are dropped); the
    A = 16 floor as a softplus (scale 64 units). ``min(127, sol(OL) + KLS)`` stays a hard clamp.
  - EG rates: the per-block increment interpolated linearly in ``q = 41 R / 64 + RS x / 8``
    between the table's integer rates; the attack factor ``floor(17 - A/256)`` kept (piecewise
    constant); static holds kept, without gradient, and only for exactly equal targets.
  - keyboard level scaling: the group ``(offset +- 1) / 3`` continuous in the break point,
    linear in the depth, the exponential curve interpolated in the group, the curve type a
    mixture of the four curves (``probs``); velocity ``2 KVS (veldata - 239)``; rate scaling
    ``RS x / 8``.
  - LFO: speed and delay increments interpolated (the delay log-linearly), the waves computed
    from a float phase, the wave a mixture of the six waves and LFO key sync a mixture of the two
    start phases (``probs``); PMS / AMS tables interpolated, PMD / AMD linear; AMS between 0 and 1
    scales the AM attenuation linearly (the exact AMS 0 -> 1 step is a 1.185 % attenuation).
  - pitch EG: level and rate tables interpolated.
  - frequency: ``log2`` of the ratio ``coarse`` (``0.5 + coarse / 2`` below 1) times
    ``(1 + fine/100)``; detune linear (``dr lf0 (detune - 7)`` in ratio mode,
    ``13457 relu(detune - 7)`` in fixed mode); fixed-mode coarse ``(round(c) & 3) + (c - round(c))``.
* **Kernel** (:func:`_kernel_relaxed`, a per-sample scan over the six operators): the ideal
  operator ``o = 4 sin(2 pi q) 2^(-(g + 1)/1024)`` (phase cycles; output = sum of carriers / 2),
  feedback ``2^-(s+1) (o[n-1] + o[n-2])``, with continuous feedback amount
  ``2^(FB - 9 - extra)`` (linear to 0 below FB = 1). ``forward="engine"`` (default): the forward
  value of each operator is the MkI operator evaluated at the relaxed phase and gain (12-bit
  phase, tables, mantissa, the floor of the feedback term, skipped operators silent), the
  backward pass differentiates the ideal sine in its place (straight-through, per operator, so
  later operators see the engine's values). On the integer grid the relaxed render is therefore
  dexed-py's, bit for bit. ``forward="smooth"``: the ideal sine in both passes, no skipping
  (the pure surrogate, 4-5x faster; finite differences of it match its gradients).
* **Algorithm** as a mixture of routings (one render, a mixture of *graphs*): ``M = sum_a p_a
  M_a``, ``C = sum_a p_a C_a``, feedback ``F[k, j] = sum_a p_a [target_a = k][source_a = j]
  2^(FB - 9 - extra_a)``. One-hot probabilities give exactly the exact routing.
* **Held hard** (from the rounded voice / argmax): oscillator mode, transpose (a note shift),
  skip flags, static-hold timing, stage-change timing of the exact part, the constant-gain rule
  of the algorithm 4 / 6 loops, osc key sync (no effect in the engine).

**Frequency ratios** (measured with the surrogate, multi-resolution STFT loss, OP2 -> OP1 at
16 kHz, 0.5 s): the loss is a narrow funnel in the ratio. Around a target ``fine`` of 30
(coarse 2) the loss value falls monotonically toward the target from 10 and from 50, but the
gradient points toward it at only 12 of 20 off-target points (wrong at 18..24 and 34..44); it
is right within +-1 step (``tests/test_dexed_proxy.py::test_frequency_gradients_are_local``).
In ``coarse`` the gradient is useless (each integer ratio is a local minimum; right at 11 of 23
off-target quarter-steps in 1..6.75). ``detune`` (cents) is smooth: right within +-5 steps of
the target. Choice: coarse, fine and fixed frequencies are predicted by the network (parameter
loss) or searched (the loss *value* is informative); the proxy keeps their gradient (the true
derivative of the surrogate) for local refinement, and detune trains by gradient.

Measured (2-core VM shared with other jobs, dexed-py 0.3.0, note 60, velocity 100, held 1.0 s
of a 1.5 s render, 44.1 kHz unless noted):

=======================  ==========================  ==========================================
set                      exact / relaxed ``engine``  relaxed ``forward="smooth"`` (surrogate)
=======================  ==========================  ==========================================
128 DX7 ROM voices       128/128 bit-identical       SNR median 50.2 dB (p10 40.8, min -1.4);
                         (all 25 algorithms used)    MSS 0.41 x the between-voice MSS
100 random voices        100/100 bit-identical       SNR median 36.4 dB (p10 17.7, min 4.5);
(28 algorithms)                                      MSS 0.45 x between-voice
=======================  ==========================  ==========================================

Also bit-identical: the ROM voices at random notes 24..99 and velocities 1..127 at 16 / 44.1
kHz and with ``normalize_feedback``; 100 random voices at 16 and 48 kHz; 22.05 kHz, velocity 0
and 127, hold 0 and hold past the end. MSS = ``diffsynth.losses.multi_resolution_stft_loss``
median over voices, divided by its median between two different voices of the set (ROM 2.64,
random 1.86). The pure surrogate's SNR is that of README section 14.3; its MSS is dominated by
what it leaves out: the engine's -72 dB quantisation floor and the exact silence of skipped
operators (with only those two restored, straight-through, it measured 0.057 on 32 ROM
voices at 16 kHz). The lowest surrogate SNRs are chaotic feedback-7 voices.

Speed (batch 16, 1.5 s each, single-threaded XLA:CPU; dexed-py renders the 16 voices one after
the other; machine load average 5-8 on 2 cores, so take +-30 %):

===================================  ===============================  ===============================
                                     16 kHz                           44.1 kHz
===================================  ===============================  ===============================
exact                                22 ms, 1100x real time           74 ms, 320x real time
relaxed forward ``engine``           490 ms, 50x                      1090 ms, 22x
relaxed forward ``smooth``           89 ms, 270x                      280 ms, 85x
relaxed ``engine`` grad (fwd + bwd)  630 ms, 38x                      2280 ms, 10x
dexed-py                             10 ms, 2300x                     40 ms (28 ms CPU), 590x
compile (exact / relaxed / grad)     4.8 / 7-9 / 8 s                  2.9 / 7-10 / 22 s
===================================  ===============================  ===============================

Not modelled: pitch bend, mod wheel, aftertouch, portamento and several notes at once (not part
of a dexed-py render); the relaxed mode does not relax the oscillator mode.
"""

from __future__ import annotations

import functools
import math
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from proxies.synth import NoteConvention, ProxyRender, note_off_sample

__all__ = [
    "BLOCK",
    "NOTES",
    "N_VCED",
    "VCED_NAMES",
    "VCED_MIN",
    "VCED_MAX",
    "CATEGORICAL",
    "ROUTE_M",
    "ROUTE_C",
    "DexedControls",
    "render",
    "render_exact",
    "render_relaxed",
    "exact_block_controls",
    "alg_routing",
    "hard_probs",
    "sr_tables",
    "transposed_note",
]

BLOCK = 64
LG_N = 6
NOTES = NoteConvention(note_off_quantum=BLOCK, note_off_rounding="ceil")
N_VCED = 155
I32 = jnp.int32
U32 = jnp.uint32
F32 = jnp.float32

# ------------------------------------------------------------------------------ VCED layout
_OP_FIELDS = (("eg_rate1", 99), ("eg_rate2", 99), ("eg_rate3", 99), ("eg_rate4", 99), ("eg_level1", 99),
              ("eg_level2", 99), ("eg_level3", 99), ("eg_level4", 99), ("kls_breakpoint", 99),
              ("kls_left_depth", 99), ("kls_right_depth", 99), ("kls_left_curve", 3), ("kls_right_curve", 3),
              ("rate_scaling", 7), ("amp_mod_sens", 3), ("key_vel_sens", 7), ("output_level", 99),
              ("osc_mode", 1), ("freq_coarse", 31), ("freq_fine", 99), ("detune", 14))
_GLOBAL_FIELDS = (("pitch_eg_rate1", 99), ("pitch_eg_rate2", 99), ("pitch_eg_rate3", 99), ("pitch_eg_rate4", 99),
                  ("pitch_eg_level1", 99), ("pitch_eg_level2", 99), ("pitch_eg_level3", 99),
                  ("pitch_eg_level4", 99), ("algorithm", 31), ("feedback", 7), ("osc_key_sync", 1),
                  ("lfo_speed", 99), ("lfo_delay", 99), ("lfo_pitch_mod_depth", 99), ("lfo_amp_mod_depth", 99),
                  ("lfo_key_sync", 1), ("lfo_wave", 5), ("pitch_mod_sens", 7), ("transpose", 48))


def _layout():
    names, hi = [], []
    for k in range(6):
        for f, m in _OP_FIELDS:
            names.append(f"op{6 - k}_{f}")
            hi.append(m)
    for f, m in _GLOBAL_FIELDS:
        names.append(f)
        hi.append(m)
    for c in range(10):
        names.append(f"name_char{c + 1}")
        hi.append(127)
    return tuple(names), np.zeros(len(hi), np.int32), np.asarray(hi, np.int32)


#: Parameter names (as :data:`proxies.dexed.spec.DEXED`), native minimum and maximum, VCED order.
VCED_NAMES, VCED_MIN, VCED_MAX = _layout()
assert len(VCED_NAMES) == N_VCED

# per-operator field offsets inside a 21-byte block
R1, L1, BP, LD, RD, LC, RC, RS, AMS, KVS, OL, MODE, COARSE, FINE, DET = 0, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, \
    18, 19, 20
PR1, PL1, ALG, FB, OKS, LSPD, LDLY, PMD, AMD, LSYNC, LWAVE, PMS, TRNSP = 126, 130, 134, 135, 136, 137, 138, 139, \
    140, 141, 142, 143, 144

#: Categorical parameters the relaxed mode mixes: VCED index -> number of choices.
CATEGORICAL: dict[int, int] = {ALG: 32, LWAVE: 6, LSYNC: 2}
for _k in range(6):
    CATEGORICAL[21 * _k + LC] = 4
    CATEGORICAL[21 * _k + RC] = 4

# ----------------------------------------------------------------------- engine tables (msfa)
SOL = np.array([0, 5, 9, 13, 17, 20, 23, 25, 27, 29, 31, 33, 35, 37, 39, 41, 42, 43, 45, 46]
               + [x + 28 for x in range(20, 100)], np.int32)
EXP_SCALE = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 14, 16, 19, 23, 27, 33, 39, 47, 56, 66, 80, 94, 110, 126, 142,
                      158, 174, 190, 206, 222, 238, 250], np.int32)
VELDATA = np.array([0, 70, 86, 97, 106, 114, 121, 126, 132, 138, 142, 148, 152, 156, 160, 163, 166, 170, 173, 174,
                    178, 181, 184, 186, 189, 190, 194, 196, 198, 200, 202, 205, 206, 209, 211, 214, 216, 218, 220,
                    222, 224, 225, 227, 229, 230, 232, 233, 235, 237, 238, 240, 241, 242, 243, 244, 246, 246, 248,
                    249, 250, 251, 252, 253, 254], np.int32)
COARSEMUL = np.array([-16777216, 0, 16777216, 26591258, 33554432, 38955489, 43368474, 47099600, 50331648,
                      53182516, 55732705, 58039632, 60145690, 62083076, 63876816, 65546747, 67108864, 68576247,
                      69959732, 71268397, 72509921, 73690858, 74816848, 75892776, 76922906, 77910978, 78860292,
                      79773775, 80654032, 81503396, 82323963, 83117622], np.int32)
FINE_LF = np.array([0] + [int(math.floor(24204406.323123 * math.log(1 + 0.01 * f) + 0.5)) for f in range(1, 100)],
                   np.int32)
PENV_RATE = np.array([1, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 16,
                      16, 17, 18, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 30, 31, 33, 34, 36, 37, 38, 39, 41, 42,
                      44, 46, 47, 49, 51, 53, 54, 56, 58, 60, 62, 64, 66, 68, 70, 72, 74, 76, 79, 82, 85, 88, 91, 94,
                      98, 102, 106, 110, 115, 120, 125, 130, 135, 141, 147, 153, 159, 165, 171, 178, 185, 193, 202,
                      211, 232, 243, 254, 255], np.int32)
PENV_TAB = np.array([-128, -116, -104, -95, -85, -76, -68, -61, -56, -52, -49, -46, -43, -41, -39, -37, -35, -33, -32,
                     -31, -30, -29, -28, -27, -26, -25, -24, -23, -22, -21, -20, -19, -18, -17, -16, -15, -14, -13,
                     -12, -11, -10, -9, -8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                     14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 38, 40,
                     43, 46, 49, 53, 58, 65, 73, 82, 92, 103, 115, 127], np.int32)
LFO_SOURCE = np.array([
    0.062541, 0.125031, 0.312393, 0.437120, 0.624610, 0.750694, 0.936330, 1.125302, 1.249609, 1.436782,
    1.560915, 1.752081, 1.875117, 2.062494, 2.247191, 2.374451, 2.560492, 2.686728, 2.873976, 2.998950,
    3.188013, 3.369840, 3.500175, 3.682224, 3.812065, 4.000800, 4.186202, 4.310716, 4.501260, 4.623209,
    4.814636, 4.930480, 5.121901, 5.315191, 5.434783, 5.617346, 5.750431, 5.946717, 6.062811, 6.248438,
    6.431695, 6.564264, 6.749460, 6.868132, 7.052186, 7.250580, 7.375719, 7.556294, 7.687577, 7.877738,
    7.993605, 8.181967, 8.372405, 8.504848, 8.685079, 8.810573, 8.986341, 9.122423, 9.300595, 9.500285,
    9.607994, 9.798158, 9.950249, 10.117361, 11.251125, 11.384335, 12.562814, 13.676149, 13.904338, 15.092062,
    16.366612, 16.638935, 17.869907, 19.193858, 19.425019, 20.833333, 21.034918, 22.502250, 24.003841, 24.260068,
    25.746653, 27.173913, 27.578599, 29.052876, 30.693677, 31.191516, 32.658393, 34.317090, 34.674064, 36.416606,
    38.197097, 38.550501, 40.387722, 40.749796, 42.625746, 44.326241, 44.883303, 46.772685, 48.590865, 49.261084])
STATICS = np.array([1764000, 1764000, 1411200, 1411200, 1190700, 1014300, 992250, 882000, 705600, 705600, 584325,
                    507150, 502740, 441000, 418950, 352800, 308700, 286650, 253575, 220500, 220500, 176400, 145530,
                    145530, 125685, 110250, 110250, 88200, 88200, 74970, 61740, 61740, 55125, 48510, 44100, 37485,
                    31311, 30870, 27562, 27562, 22050, 18522, 17640, 15435, 14112, 13230, 11025, 9261, 9261, 7717,
                    6615, 6615, 5512, 5512, 4410, 3969, 3969, 3439, 2866, 2690, 2249, 1984, 1896, 1808, 1411, 1367,
                    1234, 1146, 926, 837, 837, 705, 573, 573, 529, 441, 441], np.int64)
PMS_TAB = np.array([0, 10, 20, 33, 55, 92, 153, 255], np.int32)
AMS_TAB = np.array([0, 4342338, 7171437, 16777216], np.int64)

#: msfa FmCore::algorithms flag bytes, engine order (index 0 = OP6).
ALG_FLAGS = np.array([
    [0xc1, 0x11, 0x11, 0x14, 0x01, 0x14], [0x01, 0x11, 0x11, 0x14, 0xc1, 0x14], [0xc1, 0x11, 0x14, 0x01, 0x11, 0x14],
    [0xc1, 0x11, 0x94, 0x01, 0x11, 0x14], [0xc1, 0x14, 0x01, 0x14, 0x01, 0x14], [0xc1, 0x94, 0x01, 0x14, 0x01, 0x14],
    [0xc1, 0x11, 0x05, 0x14, 0x01, 0x14], [0x01, 0x11, 0xc5, 0x14, 0x01, 0x14], [0x01, 0x11, 0x05, 0x14, 0xc1, 0x14],
    [0x01, 0x05, 0x14, 0xc1, 0x11, 0x14], [0xc1, 0x05, 0x14, 0x01, 0x11, 0x14], [0x01, 0x05, 0x05, 0x14, 0xc1, 0x14],
    [0xc1, 0x05, 0x05, 0x14, 0x01, 0x14], [0xc1, 0x05, 0x11, 0x14, 0x01, 0x14], [0x01, 0x05, 0x11, 0x14, 0xc1, 0x14],
    [0xc1, 0x11, 0x02, 0x25, 0x05, 0x14], [0x01, 0x11, 0x02, 0x25, 0xc5, 0x14], [0x01, 0x11, 0x11, 0xc5, 0x05, 0x14],
    [0xc1, 0x14, 0x14, 0x01, 0x11, 0x14], [0x01, 0x05, 0x14, 0xc1, 0x14, 0x14], [0x01, 0x14, 0x14, 0xc1, 0x14, 0x14],
    [0xc1, 0x14, 0x14, 0x14, 0x01, 0x14], [0xc1, 0x14, 0x14, 0x01, 0x14, 0x04], [0xc1, 0x14, 0x14, 0x14, 0x04, 0x04],
    [0xc1, 0x14, 0x14, 0x04, 0x04, 0x04], [0xc1, 0x05, 0x14, 0x01, 0x14, 0x04], [0x01, 0x05, 0x14, 0xc1, 0x14, 0x04],
    [0x04, 0xc1, 0x11, 0x14, 0x01, 0x14], [0xc1, 0x14, 0x01, 0x14, 0x04, 0x04], [0x04, 0xc1, 0x11, 0x14, 0x04, 0x04],
    [0xc1, 0x14, 0x04, 0x04, 0x04, 0x04], [0xc4, 0x04, 0x04, 0x04, 0x04, 0x04]], np.int32)


def _routing_tables():
    """Routing matrices equivalent to EngineMkI's bus machine (README §4, §9.3).

    ``M[a, k, j] = 1``: engine operator j's output is summed into operator k's phase input
    (j < k: j is computed first); ``C[a, k] = 1``: k is a carrier. A skipped operator outputs 0,
    which reproduces the "empty bus" rule (an overwrite by a skipped operator empties the bus,
    a later add then overwrites, a reader of an empty bus gets no modulation).
    """
    M = np.zeros((32, 6, 6), np.int32)
    C = np.zeros((32, 6), np.int32)
    target = np.zeros(32, np.int32)
    for a in range(32):
        bus = {1: set(), 2: set()}
        for k in range(6):
            f = int(ALG_FLAGS[a, k])
            inbus, outbus, add = (f >> 4) & 3, f & 3, bool(f & 4)
            if inbus:
                for j in bus[inbus]:
                    M[a, k, j] = 1
            if outbus == 0:
                C[a, k] = 1
            else:
                bus[outbus] = (bus[outbus] | {k}) if add else {k}
            if (f & 0xC0) == 0xC0:
                target[a] = k
    source = target.copy()
    source[3], source[5] = 2, 1  # DX7 algorithms 4 and 6: the loop's last operator feeds OP6 back
    extra = np.zeros(32, np.int32)
    extra[[3, 5, 31]] = 2
    chain = np.zeros((32, 6), bool)  # operators inside a feedback loop (block-end gain, never skipped)
    chain[3, [1, 2]] = True
    chain[5, 1] = True
    return M, C, target, source, extra, chain


#: Routing of the 32 algorithms (engine order): modulation matrix, carriers, feedback target and
#: source operator, extra feedback shift (algorithms 4, 6, 32), operators inside a feedback loop.
ROUTE_M, ROUTE_C, FB_TARGET, FB_SOURCE, FB_EXTRA, CHAIN_OPS = _routing_tables()


def alg_routing(algorithm: int) -> tuple[np.ndarray, np.ndarray]:
    """DX7-numbered view of one algorithm (0..31): ``(mod [6, 6], carriers [6])`` with row/column
    0 = OP1; ``mod[i, j] = 1`` when OP(j+1) modulates OP(i+1) (dexed's ``mod_matrix`` layout)."""
    rev = np.arange(5, -1, -1)
    return ROUTE_M[algorithm][np.ix_(rev, rev)], ROUTE_C[algorithm][rev]


# MkI kernel tables (EngineMkI constructor, float as in the C++; identical in double)
def _mki_tables():
    i = np.arange(1024)
    x1 = np.sin(((0.5 + i) / np.float32(1024.0)) * np.pi / 2.0).astype(np.float32)
    sinlog = np.floor(-1024 * np.log2(x1.astype(np.float64)) + 0.5).astype(np.int64)  # C round()
    sinexp = np.floor(((2.0 ** (i / 1024.0)) - 1) * 4096 + 0.5).astype(np.int64)
    idx = np.arange(4096)
    q, k = idx >> 10, idx & 1023
    lg = np.where(q & 1, sinlog[k ^ 1023], sinlog[k])
    e = np.arange(32768)
    rexp = (4096 + sinexp[(e & 1023) ^ 1023]) >> np.minimum(e >> 10, 62)
    return lg.astype(np.int32), rexp.astype(np.int32), sinlog, sinexp


SINLOG_Q, REXP, SINLOG, SINEXP = _mki_tables()


def _sin_table():
    """msfa ``Sin`` (SIN_DELTA layout: [dy, y] pairs), used by the LFO's sine wave."""
    n = 1024
    dphase = 2 * math.pi / n
    c = int(math.floor(math.cos(dphase) * (1 << 30) + 0.5))
    s = int(math.floor(math.sin(dphase) * (1 << 30) + 0.5))
    u, v = 1 << 30, 0
    tab = [0] * (2 * n)
    R = 1 << 29
    for i in range(n // 2):
        tab[2 * i + 1] = (v + 32) >> 6
        tab[2 * (i + n // 2) + 1] = -((v + 32) >> 6)
        t = (u * s + v * c + R) >> 30
        u = (u * c - v * s + R) >> 30
        v = t
    for i in range(n - 1):
        tab[2 * i] = tab[2 * i + 3] - tab[2 * i + 1]
    tab[2 * n - 2] = -tab[2 * n - 1]
    return np.asarray(tab, np.int32)


SIN_TAB = _sin_table()


def _logfreq(note: int) -> int:
    return 50857776 + 1398101 * note


def _detune_tables():
    """Ratio-mode log-frequency after detune, ``[128 notes, 15 detunes]`` (Dx7Note::osc_freq's
    double expression, truncated to int32), and the smooth detune slope ``dr lf0`` per note."""
    out = np.zeros((128, 15), np.int64)
    slope = np.zeros(128, np.float64)
    for n in range(128):
        lf = _logfreq(n)
        lf32 = float(np.float32(lf) / np.float32(1 << 24))
        dr = 0.0209 * math.exp(-0.396 * lf32) / 7
        slope[n] = dr * lf
        for d in range(15):
            out[n, d] = math.trunc(float(lf) + dr * lf * (d - 7))
    return out.astype(np.int32), slope


DETUNE_LF, DETUNE_SLOPE = _detune_tables()


def _am_tables():
    """Exact ``uint32(exp(12.2 + 0.07 s / 2^18))`` for s in [0, 2^24] as G[s >> 12] (1 + E[s & 4095]):
    G in 32.32 fixed point, E in Q41 (absolute error < 2^-16 before the floor)."""
    import decimal

    ctx = decimal.Context(prec=40)
    k = ctx.divide(decimal.Decimal("0.07"), decimal.Decimal(262144))
    g_hi, g_lo, e = [], [], []
    for a in range(4097):
        g = ctx.exp(ctx.add(decimal.Decimal("12.2"), ctx.multiply(k, decimal.Decimal(4096 * a))))
        gq = int(ctx.multiply(g, decimal.Decimal(2 ** 32)).to_integral_value(decimal.ROUND_FLOOR))
        g_hi.append(gq >> 32)
        g_lo.append(gq & 0xFFFFFFFF)
    for b in range(4096):
        eb = ctx.subtract(ctx.exp(ctx.multiply(k, decimal.Decimal(b))), decimal.Decimal(1))
        e.append(int(ctx.multiply(eb, decimal.Decimal(2 ** 41)).to_integral_value(decimal.ROUND_HALF_EVEN)))
    return np.asarray(g_hi, np.uint32), np.asarray(g_lo, np.uint32), np.asarray(e, np.uint32)


AM_G_HI, AM_G_LO, AM_E = _am_tables()


@functools.lru_cache(maxsize=8)
def sr_tables(sample_rate: int) -> dict:
    """The process-global tables dexed-py builds for a sample rate (Env, PitchEnv, Lfo, Freqlut)."""
    sr = float(sample_rate)
    m = int((44100.0 / sr) * (1 << 24))  # Env::sr_multiplier (uint32)
    inc = np.array([(((4 + (q & 3)) << (2 + LG_N + (q >> 2))) * m) >> 24 for q in range(64)], np.int64)
    stat_n = np.zeros(100, np.int64)
    stat_a = np.zeros(100, np.int64)
    for r in range(100):
        c = int(STATICS[r]) if r < 77 else 20 * (99 - r)
        stat_n[r] = (c * m) >> 24
        stat_a[r] = ((c // 20 if r < 77 else c) * m) >> 24
    penv_unit = int(BLOCK * (1 << 24) / (21.3 * sr) + 0.5)
    lfo_unit = int(BLOCK * 25190424 / sr + 0.5) & 0xFFFFFFFF
    lfo_ratio = int(4437500000.0 * BLOCK / sr) & 0xFFFFFFFF
    delta = np.array([int(LFO_SOURCE[r] * lfo_ratio) & 0xFFFFFFFF for r in range(100)], np.uint64)
    dinc1 = np.zeros(100, np.uint64)
    dinc2 = np.zeros(100, np.uint64)
    for d in range(100):
        a = 99 - d
        if a == 99:
            dinc1[d] = dinc2[d] = 0xFFFFFFFF
        else:
            a = (16 + (a & 15)) << (1 + (a >> 4))
            dinc1[d] = (lfo_unit * a) & 0xFFFFFFFF
            dinc2[d] = (lfo_unit * max(0x80, a & 0xFF80)) & 0xFFFFFFFF
    y = float(1 << 44) / sr
    step = 2.0 ** (1.0 / 1024)
    lut = np.zeros(1025, np.int64)
    for i in range(1025):
        v = int(math.floor(y + 0.5))
        lut[i] = v if v <= 0x7FFFFFFF else -0x80000000  # x86 cvttsd2si overflow (README §6.4)
        y *= step
    return dict(m=m, env_inc=inc.astype(np.int32), static_n=stat_n.astype(np.int32),
                static_a=stat_a.astype(np.int32), penv_unit=penv_unit, lfo_delta=delta.astype(np.uint32),
                lfo_dinc1=dinc1.astype(np.uint32), lfo_dinc2=dinc2.astype(np.uint32), freqlut=lut.astype(np.int32))


# ---------------------------------------------------------------------------- integer helpers
def _u32(x):
    return jnp.asarray(x).astype(U32)


def _i32(x):
    return jnp.asarray(x).astype(I32)


def _mul_u32(a, b):
    """Full 64-bit product of uint32 ``a`` and ``b`` as (hi, lo) uint32 words."""
    a0, a1 = a & 0xFFFF, a >> 16
    b0, b1 = b & 0xFFFF, b >> 16
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> 16) + (p01 & 0xFFFF) + (p10 & 0xFFFF)
    lo = (p00 & 0xFFFF) | (mid << 16)
    hi = p11 + (p01 >> 16) + (p10 >> 16) + (mid >> 16)
    return hi, lo


def _mul_shr(a, b, s: int):
    """``(uint64(a) * b) >> s`` truncated to uint32, for uint32 a, b and 0 < s < 64."""
    hi, lo = _mul_u32(a, b)
    if s >= 32:
        return hi >> (s - 32)
    return (hi << (32 - s)) | (lo >> s)


def _am_pt(s):
    """``uint32(exp(12.2 + 0.07 s / 2^18))`` for uint32 s in [0, 2^24] (Dx7Note::compute's AM)."""
    a = jnp.minimum(s >> 12, 4096).astype(I32)
    b = (s & 4095).astype(I32)
    gh, gl, e = jnp.asarray(AM_G_HI)[a], jnp.asarray(AM_G_LO)[a], jnp.asarray(AM_E)[b]
    p1h, p1l = _mul_u32(gh, e)
    p2h, p2l = _mul_u32(gl, e)
    mid = p1l + p2h
    c1 = (mid < p1l).astype(U32)
    # Q = (X >> 41) with X = p1h 2^64 + (mid + c1 2^32) 2^32 + p2l: the product G E in 32.32
    qlo = ((p1h & 511) << 23) + (mid >> 9)
    c2 = (qlo < (mid >> 9)).astype(U32)
    qlo = qlo + (c1 << 23)
    c3 = (qlo < (c1 << 23)).astype(U32)
    qhi = (p1h >> 9) + c2 + c3
    frac = gl + qlo
    c4 = (frac < gl).astype(U32)
    return gh + qhi + c4


def _freqlut(lf, lut):
    """Freqlut::lookup (int32 log-frequency Q24 -> phase increment), int32 wrap-around included."""
    ix = (lf & 0xFFFFFF) >> 14
    y0 = lut[ix]
    y1 = lut[ix + 1]
    low = lf & 0x3FFF
    d = y1 - y0
    y = y0 + (d >> 14) * low + (((d & 0x3FFF) * low) >> 14)
    return y >> ((20 - (lf >> 24)) & 31)


def _take(table, idx):
    return jnp.asarray(table)[idx]


def _pick(x4, j):
    """x4 [..., 4], j [...] in 0..3 -> x4[..., j]."""
    return jnp.take_along_axis(x4, j[..., None], axis=-1)[..., 0]


# --------------------------------------------------------------------------- voice at note-on
class VoiceInit(NamedTuple):
    rates: jax.Array       # [B, 6, 4] int32
    levels: jax.Array      # [B, 6, 4]
    outlevel: jax.Array    # [B, 6]
    rate_scaling: jax.Array  # [B, 6]
    basepitch: jax.Array   # [B, 6]
    fixed: jax.Array       # [B, 6] bool
    ams: jax.Array         # [B, 6] uint32 (ampmodsens)
    prates: jax.Array      # [B, 4]
    plevels: jax.Array     # [B, 4]
    pmd: jax.Array         # [B] uint32 (pitchmoddepth)
    pms: jax.Array         # [B] int32 (pitchmodsens)
    amd: jax.Array         # [B] uint32 (ampmoddepth)
    lfo_speed: jax.Array   # [B]
    lfo_delay: jax.Array
    lfo_wave: jax.Array
    lfo_sync: jax.Array    # [B] bool


def _op_fields(v):
    """[B, 155] int32 -> [B, 6, 21] (engine order: index 0 = OP6)."""
    return v[:, :126].reshape(v.shape[0], 6, 21)


def _scale_level(note, bp, ld, rd, lc, rc):
    offset = note[:, None] - bp - 17
    right = offset >= 0
    group = jnp.where(right, (offset + 1) // 3, (1 - offset) // 3)
    depth = jnp.where(right, rd, ld)
    curve = jnp.where(right, rc, lc)
    lin = (group * depth * 329) >> 12
    ex = (_take(EXP_SCALE, jnp.minimum(group, 32)) * depth * 329) >> 15
    s = jnp.where((curve == 0) | (curve == 3), lin, ex)
    return jnp.where(curve < 2, -s, s)


def transposed_note(v, pitch):
    return jnp.clip(_i32(pitch) + v[:, TRNSP] - 24, 0, 127)


def voice_init(v, note, velocity) -> VoiceInit:
    """Dx7Note::init for integer VCED voices ``v [B, 155]``, transposed notes and velocities [B]."""
    op = _op_fields(v)
    vel = jnp.clip(_i32(velocity), 0, 127)
    sol = _take(SOL, op[..., OL])
    kls = _scale_level(note, op[..., BP], op[..., LD], op[..., RD], op[..., LC], op[..., RC])
    outlevel = jnp.minimum(127, sol + kls) << 5
    vv = _take(VELDATA, vel >> 1) - 239
    outlevel = outlevel + ((((op[..., KVS] * vv[:, None]) + 7) >> 3) << 4)
    outlevel = jnp.maximum(0, outlevel)
    x = jnp.clip(note // 3 - 7, 0, 31)
    rs = (op[..., RS] * x[:, None]) >> 3
    fixed = op[..., MODE] != 0
    det = op[..., DET]
    ratio_lf = (jnp.asarray(DETUNE_LF)[note[:, None], det] + _take(COARSEMUL, op[..., COARSE] & 31)
                + _take(FINE_LF, op[..., FINE]))
    fixed_lf = (((4458616 * ((op[..., COARSE] & 3) * 100 + op[..., FINE])) >> 3)
                + jnp.where(det > 7, 13457 * (det - 7), 0))
    return VoiceInit(
        rates=op[..., R1:R1 + 4], levels=op[..., L1:L1 + 4], outlevel=outlevel, rate_scaling=rs,
        basepitch=jnp.where(fixed, fixed_lf, ratio_lf), fixed=fixed,
        ams=_take(AMS_TAB.astype(np.uint32), op[..., AMS] & 3),
        prates=v[:, PR1:PR1 + 4], plevels=v[:, PL1:PL1 + 4],
        pmd=_u32((v[:, PMD] * 165) >> 6), pms=_take(PMS_TAB, v[:, PMS] & 7), amd=_u32((v[:, AMD] * 165) >> 6),
        lfo_speed=v[:, LSPD], lfo_delay=v[:, LDLY], lfo_wave=v[:, LWAVE], lfo_sync=v[:, LSYNC] != 0)


# ------------------------------------------------------------------------- exact control path
class EnvState(NamedTuple):
    level: jax.Array
    ix: jax.Array
    down: jax.Array
    rising: jax.Array
    target: jax.Array
    inc: jax.Array
    sc: jax.Array


class EnvStages(NamedTuple):
    """Per operator and stage (``[B, 6, 4]``): what ``Env::advance`` computes from the voice."""

    target: jax.Array   # int32 target level (A << 16)
    inc: jax.Array      # int32 increment per block
    static: jax.Array   # int32 static-hold count (samples)
    attack0: jax.Array  # bool: stage 0 with L1 = 0 (always holds)


def _env_stages(vi: VoiceInit, tab) -> EnvStages:
    actual = jnp.maximum(((_take(SOL, vi.levels) >> 1) << 6) + vi.outlevel[..., None] - 4256, 16)
    rs = vi.rate_scaling[..., None]
    q = jnp.minimum(((vi.rates * 41) >> 6) + rs, 63)
    r = jnp.minimum(vi.rates + rs, 99)
    attack0 = (jnp.arange(4) == 0) & (vi.levels == 0)
    static = jnp.where(attack0, _take(tab["static_a"], r), _take(tab["static_n"], r))
    return EnvStages(actual << 16, _take(tab["env_inc"], q), static, attack0)


def _sel4(x4, j):
    """x4 [..., 4], j [...] in 0..3 -> x4[..., j] (as selects, which fuse)."""
    return jnp.where(j == 0, x4[..., 0], jnp.where(j == 1, x4[..., 1], jnp.where(j == 2, x4[..., 2], x4[..., 3])))


def _env_advance(st: EnvState, newix, mask, es: EnvStages) -> EnvState:
    valid = mask & (newix < 4)
    target = _sel4(es.target, newix)
    sc = jnp.where((target == st.level) | _sel4(es.attack0, newix), _sel4(es.static, newix), 0)
    return EnvState(level=st.level, ix=jnp.where(mask, newix, st.ix), down=st.down,
                    rising=jnp.where(valid, target > st.level, st.rising), target=jnp.where(valid, target, st.target),
                    inc=jnp.where(valid, _sel4(es.inc, newix), st.inc), sc=jnp.where(valid, sc, st.sc))


def _env_keyup(st: EnvState, now, es) -> EnvState:
    mask = now & st.down
    st = st._replace(down=jnp.where(mask, False, st.down))
    return _env_advance(st, jnp.full_like(st.ix, 3), mask, es)


def _env_step(st: EnvState, es) -> EnvState:
    pend = st.sc != 0
    sc = jnp.where(pend, st.sc - BLOCK, st.sc)
    expire = pend & (sc <= 0)
    st = st._replace(sc=jnp.where(expire, 0, sc))
    st = _env_advance(st, st.ix + 1, expire, es)
    move = ((st.ix < 3) | ((st.ix < 4) & ~st.down)) & (st.sc == 0)
    up = jnp.maximum(st.level, 1716 << 16)
    up = up + (((17 << 24) - up) >> 24) * st.inc
    lv = jnp.where(st.rising, up, st.level - st.inc)
    reached = jnp.where(st.rising, lv >= st.target, lv <= st.target)
    lv = jnp.where(reached, st.target, lv)
    st = st._replace(level=jnp.where(move, lv, st.level))
    return _env_advance(st, st.ix + 1, move & reached, es)


class PenvState(NamedTuple):
    level: jax.Array
    ix: jax.Array
    down: jax.Array
    rising: jax.Array
    target: jax.Array
    inc: jax.Array


def _penv_advance(st: PenvState, newix, mask, ptarget, pinc) -> PenvState:
    valid = mask & (newix < 4)
    target = _sel4(ptarget, newix)
    return PenvState(level=st.level, ix=jnp.where(mask, newix, st.ix), down=st.down,
                     rising=jnp.where(valid, target > st.level, st.rising), target=jnp.where(valid, target, st.target),
                     inc=jnp.where(valid, _sel4(pinc, newix), st.inc))


def _penv_step(st: PenvState, ptarget, pinc) -> PenvState:
    move = (st.ix < 3) | ((st.ix < 4) & ~st.down)
    lv = jnp.where(st.rising, st.level + st.inc, st.level - st.inc)
    reached = jnp.where(st.rising, lv >= st.target, lv <= st.target)
    lv = jnp.where(reached, st.target, lv)
    st = st._replace(level=jnp.where(move, lv, st.level))
    return _penv_advance(st, st.ix + 1, move & reached, ptarget, pinc)


def _lfo_value(phase, wave, rand):
    """Lfo::getsample's waves for a uint32 phase (after the increment); returns int32 V."""
    tri = jnp.where(phase >= np.uint32(1 << 31), ~(phase >> 7), phase >> 7) & np.uint32(0xFFFFFF)
    saw_dn = (~phase ^ np.uint32(1 << 31)) >> 8
    saw_up = (phase ^ np.uint32(1 << 31)) >> 8
    square = ((~phase) >> 7) & np.uint32(1 << 24)
    p = _i32(phase >> 8)
    low = p & 0x3FFF
    pi = (p >> 13) & 2046
    sinv = _take(SIN_TAB, pi + 1) + ((_take(SIN_TAB, pi) * low) >> 14)
    sine = (1 << 23) + (sinv >> 1)
    sh = ((rand ^ 0x80) + 1) << 16
    waves = jnp.stack([_i32(tri), _i32(saw_dn), _i32(saw_up), _i32(square), sine, sh], -1)
    return jnp.take_along_axis(waves, jnp.clip(wave, 0, 5)[:, None], -1)[:, 0]


class BlockControls(NamedTuple):
    """Per block (leading axis) and engine operator: the kernel's inputs."""

    inc: jax.Array     # [nb, B, 6] int32 phase increment per sample (Q24 cycles)
    gstart: jax.Array  # [nb, B, 6] int32 gain before the block's first sample
    dg: jax.Array      # [nb, B, 6] int32 gain step per sample
    active: jax.Array  # [nb, B, 6] bool: computed this block


class Routing(NamedTuple):
    """Per voice: the algorithm as data (engine order)."""

    M: jax.Array       # [B, 6, 6] modulation matrix
    C: jax.Array       # [B, 6] carrier weights
    fb_target: jax.Array  # [B, 6] one-hot
    fb_source: jax.Array  # [B, 6] one-hot
    fb_shift: jax.Array   # [B] int32 s (feedback = (y1 + y2) >> (s + 1))
    fb_on: jax.Array      # [B] bool


def n_blocks(config: ProxyRender) -> int:
    return -(-config.n_samples // BLOCK)


def _off_block(config: ProxyRender) -> int:
    return note_off_sample(config.hold_s, config.sample_rate, NOTES) // BLOCK


def exact_block_controls(v, note, velocity, config: ProxyRender, normalize_feedback: bool = False):
    """The engine's control path for integer voices ``v [B, 155]`` (int32), transposed ``note``
    and ``velocity [B]``: returns (:class:`BlockControls`, :class:`Routing`)."""
    tab = sr_tables(int(config.sample_rate))
    nb = n_blocks(config)
    off = _off_block(config)
    vi = voice_init(v, note, velocity)
    B = v.shape[0]
    alg = v[:, ALG] & 31
    fbv = v[:, FB] & 7
    fb_on = fbv != 0
    shift = jnp.where(fb_on, 8 - fbv, 16)
    if not normalize_feedback:
        shift = jnp.minimum(shift + _take(FB_EXTRA, alg), 16)
    chain = jnp.asarray(CHAIN_OPS)[alg] & fb_on[:, None]  # [B, 6]
    routing = Routing(M=jnp.asarray(ROUTE_M)[alg], C=jnp.asarray(ROUTE_C)[alg],
                      fb_target=jax.nn.one_hot(_take(FB_TARGET, alg), 6, dtype=I32),
                      fb_source=jax.nn.one_hot(jnp.where(fb_on, _take(FB_SOURCE, alg), _take(FB_TARGET, alg)), 6,
                                               dtype=I32),
                      fb_shift=shift, fb_on=fb_on)

    z6 = jnp.zeros((B, 6), I32)
    env = EnvState(level=z6, ix=z6, down=jnp.ones((B, 6), bool), rising=jnp.zeros((B, 6), bool), target=z6, inc=z6,
                   sc=z6)
    es = _env_stages(vi, tab)
    env = _env_advance(env, z6, jnp.ones((B, 6), bool), es)
    unit = int(tab["penv_unit"])
    ptarget = _take(PENV_TAB, vi.plevels) << 19
    pinc = _take(PENV_RATE, vi.prates) * unit
    z1 = jnp.zeros((B,), I32)
    pst = PenvState(level=_take(PENV_TAB, vi.plevels[:, 3]) << 19, ix=z1, down=jnp.ones((B,), bool),
                    rising=jnp.zeros((B,), bool), target=z1, inc=z1)
    pst = _penv_advance(pst, z1, jnp.ones((B,), bool), ptarget, pinc)
    lfo_phase = jnp.where(vi.lfo_sync, np.uint32((1 << 31) - 1), np.uint32(0)).astype(U32)
    delta = _take(tab["lfo_delta"], vi.lfo_speed)
    dinc1, dinc2 = _take(tab["lfo_dinc1"], vi.lfo_delay), _take(tab["lfo_dinc2"], vi.lfo_delay)
    lut = jnp.asarray(tab["freqlut"])

    def step(carry, b):  # the stateful part, one block: keyup, LFO, pitch EG, operator EGs
        env, pst, phase, dstate, rand = carry
        up = b == off
        env = _env_keyup(env, up, es)
        pmask = up & pst.down
        pst = pst._replace(down=jnp.where(pmask, False, pst.down))
        pst = _penv_advance(pst, jnp.full_like(pst.ix, 3), pmask, ptarget, pinc)
        phase = phase + delta  # Lfo::getsample, then Lfo::getdelay
        rand = jnp.where(phase < delta, (rand * 179 + 17) & 0xFF, rand)
        V = _lfo_value(phase, vi.lfo_wave, rand)
        dinc = jnp.where(dstate < np.uint32(1 << 31), dinc1, dinc2)
        d = dstate + dinc
        ovf = d < dstate
        D = jnp.where(ovf, 1 << 24, jnp.where(d < np.uint32(1 << 31), 0, _i32((d >> 7) & 0xFFFFFF)))
        dstate = jnp.where(ovf, dstate, d)
        pst = _penv_step(pst, ptarget, pinc)
        env = _env_step(env, es)
        return (env, pst, phase, dstate, rand), (V, D, pst.level, env.level)

    carry = (env, pst, lfo_phase, jnp.zeros((B,), U32), z1)
    _, (V, D, penv, level) = lax.scan(step, carry, jnp.arange(nb))
    # the stateless rest of Dx7Note::compute, vectorised over blocks: [nb, B(, 6)]
    pmd = vi.pmd * _u32(D)
    senslfo = vi.pms * (V - (1 << 23))
    hi, lo = _mul_u32(pmd, _u32(jnp.abs(senslfo)))
    mag = _i32(hi >> 7)
    exact = ((hi & 127) == 0) & (lo == 0)
    pmod = jnp.where(senslfo < 0, -(mag + jnp.where(exact, 0, 1)), mag)  # (P >> 39), then |.| and sign
    pitch_mod = penv + pmod
    amod = (vi.amd * _u32(D)) >> 8
    amd_mod = _mul_shr(amod, _u32((1 << 24) - V), 24)
    lf = vi.basepitch + jnp.where(vi.fixed, 0, pitch_mod[..., None])
    inc = _freqlut(lf, lut)
    sens = _mul_shr(amd_mod[..., None], vi.ams, 24)
    pt = _am_pt(sens)
    ldiff = _i32(_mul_shr(_u32(level), pt << 4, 28))
    level_in = jnp.where(vi.ams != 0, level - ldiff, level)
    g2 = 16384 - (level_in >> 14)
    g1 = jnp.concatenate([jnp.full((1, B, 6), 16383, I32), g2[:-1]], 0)  # gain_out = 0 only at note-on
    active = (g1 <= 16284) | (g2 <= 16284)
    dg = (g2 - g1 + 32) >> 6
    in_loop = chain & active[:, :, :1]
    blocks = BlockControls(inc=inc, gstart=jnp.where(in_loop, g2, g1), dg=jnp.where(in_loop, 0, dg),
                           active=active | in_loop)
    return blocks, routing


# --------------------------------------------------------------------------------- FM kernels
def _mkisin(phase, gain):
    """EngineMkI's mkiSin: 12-bit phase, log-sine + exp tables, 13-bit mantissa, int32 output."""
    idx = (phase >> 12) & 4095
    r = jnp.asarray(REXP)[jnp.asarray(SINLOG_Q)[idx] + gain]
    return (r ^ -(idx >> 11)) << 13


def _kernel_exact(blocks: BlockControls, rt: Routing):
    """Integer FM kernel; returns the int32 mix ``[B, nb*64]``.

    The feedback target operator (never modulated by another operator) runs as a per-sample
    ``lax.scan``, together with the rest of its loop for DX7 algorithms 4 and 6 (whose other
    members use constant gains there); every other operator is computed vectorised over all
    samples in engine order (its modulators are earlier operators), with the target's output
    substituted. Bit-identical to running the six operators sample by sample.
    """
    inc, gs, dg, act = blocks  # [nb, B, 6]
    nb, B, _ = inc.shape
    i = jnp.arange(BLOCK, dtype=I32)[None, :, None]
    p0 = jnp.cumsum(inc << LG_N, axis=0) - (inc << LG_N)  # phase at each block start (int32 wrap)

    def ramp(x0, dx, k, first=0):  # block start / step of operator k (int or [B] index) -> [nb, 64, B]
        if isinstance(k, int):
            x0, dx = x0[..., k], dx[..., k]
        else:
            x0, dx = pick(x0, k), pick(dx, k)
        return x0[:, None, :] + dx[:, None, :] * (i + first)

    pick = lambda x, k: jnp.take_along_axis(x, jnp.broadcast_to(k[None, :, None], (nb, B, 1)), 2)[..., 0]  # noqa: E731
    tgt = jnp.argmax(rt.fb_target, -1)
    length = jnp.where(rt.fb_on, jnp.argmax(rt.fb_source, -1) - tgt + 1, 1)  # loop length 1..3
    flat = lambda x: x.reshape(nb * BLOCK, B)  # noqa: E731
    xs = (flat(ramp(p0, inc, tgt)), flat(ramp(gs, dg, tgt, 1)),
          flat(jnp.broadcast_to(pick(act, tgt)[:, None, :], (nb, BLOCK, B))))
    sh = rt.fb_shift + 1

    def single(c, x):
        h0, h1 = c
        p, g, a = x
        y = _mkisin(p + jnp.where(rt.fb_on, (h0 + h1) >> sh, 0), g)
        return (jnp.where(a, h1, h0), jnp.where(a, y, h1)), jnp.where(a, y, 0)

    def loop(c, x):
        h0, h1 = c
        p, g, a, p1, g1, p2, g2 = x
        y = _mkisin(p + jnp.where(rt.fb_on, (h0 + h1) >> sh, 0), g)
        y1 = _mkisin(p1 + y, g1)
        y2 = _mkisin(p2 + y1, g2)
        last = jnp.where(length == 3, y2, jnp.where(length == 2, y1, y))
        return (jnp.where(a, h1, h0), jnp.where(a, last, h1)), jnp.where(a, y, 0)

    z = jnp.zeros((B,), I32)

    def run_loop(_):
        extra = []
        for k in (1, 2):  # the loop members of algorithms 4 / 6 (engine operators 1, 2)
            extra += [flat(ramp(p0, inc, k)), flat(ramp(gs, dg, k, 1))]
        return lax.scan(loop, (z, z), xs + tuple(extra))[1]

    yt = lax.cond(jnp.any(length > 1), run_loop, lambda _: lax.scan(single, (z, z), xs)[1], None)
    yt = yt.reshape(nb, BLOCK, B)
    ys = []
    out = jnp.zeros((nb, BLOCK, B), I32)
    for k in range(6):
        inp = ramp(p0, inc, k)
        for j in range(k):
            inp = inp + rt.M[:, k, j] * ys[j]
        y = _mkisin(inp, ramp(gs, dg, k, 1)) * act[:, None, :, k].astype(I32)
        y = jnp.where(tgt == k, yt, y)
        ys.append(y)
        out = out + rt.C[:, k] * y
    return jnp.transpose(out.reshape(nb * BLOCK, B), (1, 0))


def render_exact(vced, pitch, velocity, config: ProxyRender, normalize_feedback: bool = False):
    """Exact mode: integer VCED voices ``[B, 155]`` -> dexed-py's audio ``[B, 1, n_samples]``."""
    v = jnp.asarray(vced)
    v = (v if jnp.issubdtype(v.dtype, jnp.integer) else jnp.floor(v + 0.5)).astype(I32)
    note = transposed_note(v, pitch)
    blocks, rt = exact_block_controls(v, note, velocity, config, normalize_feedback)
    mix = _kernel_exact(blocks, rt)[:, :config.n_samples]
    return (mix.astype(F32) * F32(2.0 ** -25))[:, None, :]


# ------------------------------------------------------------------------ smooth control path
def _interp(table, x):
    """Piecewise-linear interpolation of ``table`` at continuous index x (clipped to its range)."""
    t = jnp.asarray(table, F32)
    n = t.shape[0]
    x = x + lax.stop_gradient(jnp.clip(x, 0.0, n - 1.0) - x)  # at a bound: the last segment's slope
    i = jnp.clip(jnp.floor(x), 0, n - 2).astype(I32)
    w = x - i
    return t[i] * (1 - w) + t[i + 1] * w


def _softfloor16(x, tau=64.0):
    return 16.0 + tau * jax.nn.softplus((x - 16.0) / tau)


class SmoothVoice(NamedTuple):
    targets: jax.Array    # [B, 6, 4] A units
    qrate: jax.Array      # [B, 6, 4] continuous q
    srate: jax.Array      # [B, 6, 4] continuous static rate index R + rs
    l1zero: jax.Array     # [B, 6] bool (L1 == 0 attack hold)
    ams_w: jax.Array      # [B, 6] AM on-weight min(AMS, 1)
    ams_n: jax.Array      # [B, 6] ams' / 2^24
    base_lf: jax.Array    # [B, 6] octaves (without pitch modulation)
    fixed: jax.Array      # [B, 6] bool
    ptarget: jax.Array    # [B, 4] octaves
    pinc: jax.Array       # [B, 4] octaves per block
    pmd: jax.Array        # [B] (PMD 165/64)
    pms: jax.Array        # [B] interpolated table
    amd: jax.Array        # [B]
    lfo_delta: jax.Array  # [B] cycles per block
    dinc1: jax.Array      # [B] (units of 2^32 per block)
    dinc2: jax.Array
    wave_p: jax.Array     # [B, 6]
    sync_p: jax.Array     # [B]


def _smooth_voice(x, probs, note, velocity, config: ProxyRender) -> SmoothVoice:
    """Continuous voice values x [B, 155] (float) -> the smooth surrogate's per-note constants."""
    tab = sr_tables(int(config.sample_rate))
    B = x.shape[0]
    op = x[:, :126].reshape(B, 6, 21)
    n = note.astype(F32)[:, None]
    # keyboard level scaling with curve mixtures
    offset = n - op[..., BP] - 17.0
    right = offset >= 0
    group = jnp.where(right, (offset + 1.0) / 3.0, (1.0 - offset) / 3.0)
    depth = jnp.where(right, op[..., RD], op[..., LD])
    pc = jnp.where(right[..., None], probs["rc"], probs["lc"])  # [B, 6, 4]
    lin = group * depth * (329.0 / 4096.0)
    ex = _interp(EXP_SCALE, jnp.minimum(group, 32.0)) * depth * (329.0 / 32768.0)
    kls = pc[..., 0] * -lin + pc[..., 1] * -ex + pc[..., 2] * ex + pc[..., 3] * lin
    sol_ol = _interp(SOL, op[..., OL])
    vv = (_take(VELDATA, jnp.clip(_i32(velocity), 0, 127) >> 1) - 239).astype(F32)
    outlevel = 32.0 * jnp.minimum(127.0, sol_ol + kls) + 2.0 * op[..., KVS] * vv[:, None]
    outlevel = jnp.maximum(outlevel, 0.0)
    lv = op[..., L1:L1 + 4]
    targets = _softfloor16(32.0 * _interp(SOL, lv) + outlevel[..., None] - 4256.0)
    xk = jnp.clip(note // 3 - 7, 0, 31).astype(F32)[:, None]
    rs = op[..., RS] * xk / 8.0
    rates = op[..., R1:R1 + 4]
    qrate = jnp.clip(rates * (41.0 / 64.0) + rs[..., None], 0.0, 63.0)
    srate = jnp.clip(rates + rs[..., None], 0.0, 99.0)
    amsv = op[..., AMS]
    # frequency (octaves)
    coarse, fine, det = op[..., COARSE], op[..., FINE], op[..., DET]
    fixed = jnp.floor(op[..., MODE] + 0.5) != 0
    lf0 = jnp.asarray([_logfreq(i) / 2.0 ** 24 for i in range(128)], F32)[note][:, None]
    slope = jnp.asarray(DETUNE_SLOPE / 2.0 ** 24, F32)[note][:, None]
    ratio = jnp.where(coarse >= 1.0, coarse, 0.5 + 0.5 * jnp.clip(coarse, 0.0, 1.0))
    ratio_lf = lf0 + slope * (det - 7.0) + jnp.log2(ratio) + jnp.log2(1.0 + fine / 100.0)
    cr = jnp.floor(coarse + 0.5)
    cfix = (cr.astype(I32) & 3).astype(F32) + (coarse - cr)
    fixed_lf = (4458616.0 / 8.0 / 2.0 ** 24) * (cfix * 100.0 + fine) + (13457.0 / 2.0 ** 24) * jax.nn.relu(det - 7.0)
    # pitch EG, LFO
    pl, pr = x[:, PL1:PL1 + 4], x[:, PR1:PR1 + 4]
    unit = float(tab["penv_unit"])
    lfo_ratio = float(int(4437500000.0 * BLOCK / float(config.sample_rate)))
    d1 = np.maximum(tab["lfo_dinc1"].astype(np.float64), 1.0) / 2.0 ** 32
    d2 = np.maximum(tab["lfo_dinc2"].astype(np.float64), 1.0) / 2.0 ** 32
    d1[0] = d2[0] = 1.0
    return SmoothVoice(
        targets=targets, qrate=qrate, srate=srate, l1zero=jnp.floor(lv[..., 0] + 0.5) == 0,
        ams_w=jnp.clip(amsv, 0.0, 1.0), ams_n=_interp(AMS_TAB / 2.0 ** 24, amsv),
        base_lf=jnp.where(fixed, fixed_lf, ratio_lf), fixed=fixed,
        ptarget=_interp(PENV_TAB / 32.0, pl), pinc=_interp(PENV_RATE * unit / 2.0 ** 24, pr),
        pmd=x[:, PMD] * (165.0 / 64.0), pms=_interp(PMS_TAB, x[:, PMS]), amd=x[:, AMD] * (165.0 / 64.0),
        lfo_delta=_interp(LFO_SOURCE * lfo_ratio / 2.0 ** 32, x[:, LSPD]),
        dinc1=jnp.exp(_interp(np.log(d1), x[:, LDLY])), dinc2=jnp.exp(_interp(np.log(d2), x[:, LDLY])),
        wave_p=probs["wave"], sync_p=probs["sync"][:, 1])


def _smooth_lfo_waves(p):
    """Six LFO waves (normalised 0..1) at float phases p in [0, 1)."""
    tri = jnp.where(p < 0.5, 2.0 * p, 2.0 - 2.0 * p)
    saw_dn = jnp.mod(0.5 - p, 1.0)
    saw_up = jnp.mod(p + 0.5, 1.0)
    square = jnp.where(p < 0.5, 1.0, 0.0)
    sine = 0.5 + 0.5 * jnp.sin(2.0 * np.pi * p)
    return tri, saw_dn, saw_up, square, sine


def _smooth_controls(sv: SmoothVoice, config: ProxyRender):
    """Float surrogate of the control path: per block g2 [nb, B, 6] (gain units) and the
    log-frequency [nb, B, 6] (octaves). Same stage logic as the integer path."""
    tab = sr_tables(int(config.sample_rate))
    nb = n_blocks(config)
    off = _off_block(config)
    B = sv.pmd.shape[0]
    inc_tab = tab["env_inc"].astype(np.float64) / 65536.0
    stat_n = tab["static_n"].astype(np.float64)
    stat_a = tab["static_a"].astype(np.float64)

    def advance(st, newix, mask):
        level, ix, down, rising, target, inc, sc = st
        valid = mask & (newix < 4)
        j = jnp.clip(newix, 0, 3)
        tg = _pick(sv.targets, j)
        q = _pick(sv.qrate, j)
        ic = _interp(inc_tab, q)
        attack0 = (j == 0) & sv.l1zero
        r = _pick(sv.srate, j)
        cnt = jnp.where(attack0, _interp(stat_a, r), _interp(stat_n, r))
        hold = (jnp.abs(tg - level) < 1e-3) | attack0
        return (level, jnp.where(mask, newix, ix), down, jnp.where(valid, tg > level, rising),
                jnp.where(valid, tg, target), jnp.where(valid, ic, inc),
                jnp.where(valid, jnp.where(hold, lax.stop_gradient(cnt), 0.0), sc))

    def env_step(st):
        level, ix, down, rising, target, inc, sc = st
        pend = sc > 0
        sc = jnp.where(pend, sc - BLOCK, sc)
        expire = pend & (sc <= 0)
        sc = jnp.where(expire, 0.0, sc)
        st = advance((level, ix, down, rising, target, inc, sc), ix + 1, expire)
        level, ix, down, rising, target, inc, sc = st
        move = ((ix < 3) | ((ix < 4) & ~down)) & (sc <= 0)
        up = jnp.maximum(level, 1716.0)
        up = up + lax.stop_gradient(jnp.floor(17.0 - up / 256.0)) * inc
        lv = jnp.where(rising, up, level - inc)
        reached = jnp.where(rising, lv >= target, lv <= target)
        lv = jnp.where(reached, target, lv)
        level = jnp.where(move, lv, level)
        return advance((level, ix, down, rising, target, inc, sc), ix + 1, move & reached)

    def padvance(st, newix, mask):
        level, ix, down, rising, target, inc = st
        valid = mask & (newix < 4)
        j = jnp.clip(newix, 0, 3)
        tg = _pick(sv.ptarget, j)
        return (level, jnp.where(mask, newix, ix), down, jnp.where(valid, tg > level, rising),
                jnp.where(valid, tg, target), jnp.where(valid, _pick(sv.pinc, j), inc))

    def pstep(st):
        level, ix, down, rising, target, inc = st
        move = (ix < 3) | ((ix < 4) & ~down)
        lv = jnp.where(rising, level + inc, level - inc)
        reached = jnp.where(rising, lv >= target, lv <= target)
        lv = jnp.where(reached, target, lv)
        level = jnp.where(move, lv, level)
        return padvance((level, ix, down, rising, target, inc), ix + 1, move & reached)

    z6 = jnp.zeros((B, 6), F32)
    i6 = jnp.zeros((B, 6), I32)
    env = advance((z6, i6, jnp.ones((B, 6), bool), jnp.zeros((B, 6), bool), z6, z6, z6), i6,
                  jnp.ones((B, 6), bool))
    z1, i1 = jnp.zeros((B,), F32), jnp.zeros((B,), I32)
    pst = padvance((sv.ptarget[:, 3], i1, jnp.ones((B,), bool), jnp.zeros((B,), bool), z1, z1), i1,
                   jnp.ones((B,), bool))
    ph0 = jnp.stack([z1, jnp.full((B,), ((1 << 31) - 1) / 2.0 ** 32, F32)], -1)  # free, synced start

    def step(carry, b):
        env, pst, ph, ds, rand = carry
        up = b == off
        level, ix, down, rising, target, inc, sc = env
        mask = up & down
        env = advance((level, ix, jnp.where(mask, False, down), rising, target, inc, sc), jnp.full_like(ix, 3), mask)
        plevel, pix, pdown, pr, pt, pi = pst
        pmask = up & pdown
        pst = padvance((plevel, pix, jnp.where(pmask, False, pdown), pr, pt, pi), jnp.full_like(pix, 3), pmask)
        # LFO (two phase tracks: free and synced start), S&H from the same LCG
        ph_new = ph + sv.lfo_delta[:, None]
        wrap = ph_new >= 1.0
        ph = ph_new - lax.stop_gradient(jnp.floor(ph_new))
        rand = jnp.where(wrap, (rand * 179 + 17) & 0xFF, rand)
        sh = (((rand ^ 0x80) + 1) / 256.0).astype(F32)
        waves = jnp.stack(list(_smooth_lfo_waves(ph)) + [sh], -1)  # [B, 2, 6]
        V2 = jnp.sum(waves * sv.wave_p[:, None, :], -1)
        V = V2[:, 0] * (1.0 - sv.sync_p) + V2[:, 1] * sv.sync_p
        dinc = jnp.where(ds < 0.5, sv.dinc1, sv.dinc2)
        d = ds + dinc
        ovf = d >= 1.0
        D = jnp.where(ovf, 1.0, jnp.clip(2.0 * d - 1.0, 0.0, 1.0))
        ds = jnp.where(ovf, ds, d)
        pst = pstep(pst)
        pmod = sv.pmd * sv.pms * D * (V - 0.5) * (2.0 ** 9 / 2.0 ** 24)
        lfmod = pst[0] + pmod
        amd_mod = sv.amd * D * (1.0 - V) * 2.0 ** 16
        env = env_step(env)
        A = env[0]
        sens = amd_mod[:, None] * sv.ams_n
        pt = jnp.exp(12.2 + 0.07 * sens / 262144.0)
        A_in = A * (1.0 - sv.ams_w * pt / 2.0 ** 24)
        g2 = 16384.0 - 4.0 * A_in
        lfo_lf = jnp.where(sv.fixed, 0.0, lfmod[:, None])
        return (env, pst, ph, ds, rand), (g2, lfo_lf)

    carry = (env, pst, ph0, z1, jnp.zeros((B, 2), I32))
    _, (g2, lfm) = lax.scan(step, carry, jnp.arange(nb))
    return g2, lfm


# ---------------------------------------------------------------------------- relaxed mode
class DexedControls(NamedTuple):
    """What :func:`render` takes: native VCED values and (relaxed mode) probabilities.

    ``values``: ``[B, 155]`` float32 in native units (integers in exact mode). ``probs``: None
    (exact mode) or a dict with ``"alg" [B, 32]``, ``"wave" [B, 6]``, ``"sync" [B, 2]``,
    ``"lc"``/``"rc"`` ``[B, 6, 4]`` (engine operator order, index 0 = OP6).
    """

    values: jax.Array
    probs: Mapping | None = None


def hard_probs(v) -> dict:
    """One-hot relaxed-mode probabilities of integer voices ``v [B, 155]``."""
    v = jnp.floor(jnp.asarray(v, F32) + 0.5).astype(I32)
    op = _op_fields(v)
    return {"alg": jax.nn.one_hot(v[:, ALG], 32, dtype=F32), "wave": jax.nn.one_hot(v[:, LWAVE], 6, dtype=F32),
            "sync": jax.nn.one_hot(v[:, LSYNC], 2, dtype=F32), "lc": jax.nn.one_hot(op[..., LC], 4, dtype=F32),
            "rc": jax.nn.one_hot(op[..., RC], 4, dtype=F32)}


def _soft_routing(x, probs, normalize_feedback: bool):
    p = probs["alg"]
    M = jnp.einsum("ba,akj->bkj", p, jnp.asarray(ROUTE_M, F32))
    C = p @ jnp.asarray(ROUTE_C, F32)
    fbv = x[:, FB]
    base = jnp.where(fbv >= 1.0, 2.0 ** (fbv - 9.0), fbv * 2.0 ** -8)  # 2^-(s+1), s = 8 - FB
    extra = np.zeros(32) if normalize_feedback else FB_EXTRA.astype(np.float64)
    tgt = np.eye(6)[FB_TARGET]  # [32, 6]
    src = np.eye(6)[FB_SOURCE]
    F_a = tgt[:, :, None] * src[:, None, :] * (2.0 ** -extra)[:, None, None]  # [32, 6, 6]
    F = jnp.einsum("ba,akj->bkj", p, jnp.asarray(F_a, F32)) * base[:, None, None]
    return M, C, F


def _kernel_relaxed(blocks: BlockControls, dinc, dgs, ddg, M, C, F, upd, ste: bool):
    """Float FM kernel: a per-sample scan (nested in a scan over blocks) over the six operators
    with a soft routing.

    Each operator is the ideal sine ``o = 4 sin(2 pi q) 2^(-(g + 1)/1024)`` (cycles of phase;
    the output is ``sum_k C_k o_k / 2``) at the phase ``q = phase + sum_j M_kj o_j + sum_j F_kj
    (o_j[n-1] + o_j[n-2])`` and the gain ``g`` (exact integer ramp + float residual). With
    ``ste`` the forward value is the MkI operator itself evaluated there (12-bit phase,
    log-sine/exp tables, 13-bit mantissa, the engine's floor of the feedback term, skipped
    operators silent, the feedback history frozen while the target is skipped: on the integer
    grid this is the exact engine) and the backward pass differentiates the ideal sine in its
    place (straight-through). ``upd [nb, B]``: whether the feedback history advances.
    Returns the mix ``[B, nb*64]`` (dexed-py output units).
    """
    B = C.shape[0]
    two_pi = F32(2.0 * np.pi)
    sg = lax.stop_gradient

    def block(carry, x):
        inc, gs, dg, act, dinc_b, dgs_b, ddg_b, upd_b = x
        ph_i, dph, yp1, yp2 = carry
        dph = dph - sg(jnp.floor(dph))

        def sample(c, i):
            ph_i, dph, yp1, yp2 = c
            fi = (i + 1).astype(F32)
            gi = gs + (i + 1) * dg
            g = gi.astype(F32) + dgs_b + fi * ddg_b
            amp = 4.0 * jnp.exp2(-(g + 1.0) / 1024.0)
            p = (ph_i & 0xFFFFFF).astype(F32) * F32(2.0 ** -24) + dph
            fb = jnp.einsum("bkj,bj->bk", F, yp1 + yp2)
            if ste:
                g_int = sg(gi + jnp.floor(dgs_b + fi * ddg_b + 0.5).astype(I32))
                fb_q24 = sg(jnp.floor(fb * F32(2.0 ** 24)).astype(I32))
                base = sg(ph_i + jnp.floor(dph * F32(2.0 ** 24) + 0.5).astype(I32) + fb_q24)
            ys = []
            for k in range(6):
                m = 0.0
                for j in range(k):
                    m = m + M[:, k, j] * ys[j]
                o = amp[:, k] * jnp.sin(two_pi * (p[:, k] + fb[:, k] + m))
                if ste:
                    q = base[:, k] + sg(jnp.round(m * F32(2.0 ** 24)).astype(I32))
                    y = _mkisin(q, g_int[:, k]) * act[:, k].astype(I32)
                    o = o + sg(y.astype(F32) * F32(2.0 ** -24) - o)
                ys.append(o)
            Y = jnp.stack(ys, -1)
            out = 0.5 * jnp.sum(C * Y, -1)
            if ste:
                Y, yp1 = jnp.where(upd_b[:, None], Y, yp1), jnp.where(upd_b[:, None], yp1, yp2)
            return (ph_i + inc, dph + dinc_b, Y, yp1), out

        carry, outs = lax.scan(sample, (ph_i, dph, yp1, yp2), jnp.arange(BLOCK, dtype=I32))
        return carry, outs

    z = jnp.zeros((B, 6), F32)
    _, outs = lax.scan(block, (jnp.zeros((B, 6), I32), z, z, z), tuple(blocks) + (dinc, dgs, ddg, upd))
    return jnp.transpose(outs, (2, 0, 1)).reshape(B, -1)


def render_relaxed(values, probs: Mapping, pitch, velocity, config: ProxyRender, normalize_feedback: bool = False,
                   forward: str = "engine"):
    """Relaxed mode: continuous native values ``[B, 155]`` and probabilities (see
    :class:`DexedControls`) -> ``[B, 1, n_samples]``; differentiable in ``values`` and ``probs``.

    ``forward="engine"`` (default): the forward value is the MkI operator evaluated at the
    relaxed phases and gains, the gradient that of the ideal sine (straight-through; on the
    integer grid the output is dexed-py's). ``forward="smooth"``: the ideal float sine in both
    passes (the pure surrogate; what the gradient sees).
    """
    if forward not in ("engine", "smooth"):
        raise ValueError(f"forward must be 'engine' or 'smooth', got {forward!r}")
    x = jnp.asarray(values, F32)
    pitch = jnp.broadcast_to(jnp.asarray(pitch, I32), x.shape[:1])
    velocity = jnp.broadcast_to(jnp.asarray(velocity, I32), x.shape[:1])
    # clip to the native ranges with an identity gradient (a value at its bound keeps a gradient)
    x = x + lax.stop_gradient(jnp.clip(x, jnp.asarray(VCED_MIN, F32), jnp.asarray(VCED_MAX, F32)) - x)
    xr = lax.stop_gradient(jnp.floor(x + 0.5))  # the engine's rounding (spec.vced_from_normalized)
    # the rounded voice takes the argmax of each mixture
    vr = xr.astype(I32)
    vr = vr.at[:, ALG].set(jnp.argmax(probs["alg"], -1)).at[:, LWAVE].set(jnp.argmax(probs["wave"], -1))
    vr = vr.at[:, LSYNC].set(jnp.argmax(probs["sync"], -1))
    lc, rc = jnp.argmax(probs["lc"], -1), jnp.argmax(probs["rc"], -1)
    idx = np.arange(6) * 21
    vr = vr.at[:, idx + LC].set(lc).at[:, idx + RC].set(rc)
    hp = hard_probs(vr)
    note = transposed_note(vr, pitch)
    blocks, rt = exact_block_controls(vr, note, velocity, config, normalize_feedback)
    blocks = jax.tree_util.tree_map(lax.stop_gradient, blocks)
    upd = jnp.any(blocks.active & rt.fb_target.astype(bool)[None], -1)  # [nb, B]: the target sounds
    # smooth residual: surrogate(x, probs) - surrogate(round(x), one-hot)
    B = x.shape[0]
    both_x = jnp.concatenate([x, vr.astype(F32)], 0)
    both_p = {k: jnp.concatenate([jnp.asarray(probs[k], F32), hp[k]], 0) for k in hp}
    sv = _smooth_voice(both_x, both_p, jnp.concatenate([note, note]), jnp.concatenate([velocity, velocity]), config)
    g2, lfm = _smooth_controls(sv, config)
    dg2 = g2[:, :B] - g2[:, B:]
    dlf = (lfm[:, :B] - lfm[:, B:]) + (sv.base_lf[:B] - sv.base_lf[B:])[None]
    dinc = blocks.inc.astype(F32) * F32(2.0 ** -24) * (jnp.exp2(dlf) - 1.0)  # cycles per sample
    prev = jnp.concatenate([jnp.zeros_like(dg2[:1]), dg2[:-1]], 0)
    in_loop = jnp.asarray(CHAIN_OPS)[vr[:, ALG]] & (vr[:, FB] != 0)[:, None]
    const = in_loop[None] & blocks.active[:, :, :1]
    dgs = jnp.where(const, dg2, prev)
    ddg = jnp.where(const, 0.0, (dg2 - prev) / BLOCK)
    M, C, F = _soft_routing(x, probs, normalize_feedback)
    mix = _kernel_relaxed(blocks, dinc, dgs, ddg, M, C, F, upd, forward == "engine")[:, :config.n_samples]
    return mix[:, None, :]


def render(controls: DexedControls, pitch, velocity, config: ProxyRender, key=None, normalize_feedback: bool = False):
    """The proxy render (:class:`proxies.synth.Proxy` contract): exact mode when
    ``controls.probs is None``, relaxed mode otherwise. ``key`` is unused (the engine is
    deterministic)."""
    del key
    if controls.probs is None:
        return render_exact(controls.values, pitch, velocity, config, normalize_feedback)
    return render_relaxed(controls.values, controls.probs, pitch, velocity, config, normalize_feedback)
