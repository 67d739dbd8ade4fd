"""The DX7 voice as Dexed / dexed-py 0.3.0 plays it: 155 values in VCED order, declared once.

Source: ``shared/dexed/README.md`` §3 (every field checked against the engine). A voice is the
155-byte VCED block of a DX7 single-voice dump; this spec declares one parameter per byte, in
byte order, so parameter index ``i`` *is* VCED byte ``i``:

====================  ============================================================================
VCED bytes            parameters
====================  ============================================================================
``21 k + 0 .. 20``    operator block ``k = 0..5`` holds **OP(6 - k)**: OP6 first, OP1 last (bytes
                      105..125). Per block, in order: ``eg_rate1..4`` (+0..3), ``eg_level1..4``
                      (+4..7), ``kls_breakpoint`` (+8), ``kls_left_depth`` (+9),
                      ``kls_right_depth`` (+10), ``kls_left_curve`` (+11), ``kls_right_curve``
                      (+12), ``rate_scaling`` (+13), ``amp_mod_sens`` (+14), ``key_vel_sens``
                      (+15), ``output_level`` (+16), ``osc_mode`` (+17), ``freq_coarse`` (+18),
                      ``freq_fine`` (+19), ``detune`` (+20); named ``op{N}_<field>``.
``126 .. 129``        ``pitch_eg_rate1..4``
``130 .. 133``        ``pitch_eg_level1..4`` (50 = no shift)
``134``               ``algorithm`` (0..31 = DX7 algorithm 1..32)
``135``               ``feedback`` (0..7)
``136``               ``osc_key_sync`` (no effect in dexed-py; fixed in the prior)
``137 .. 140``        ``lfo_speed``, ``lfo_delay``, ``lfo_pitch_mod_depth``, ``lfo_amp_mod_depth``
``141``               ``lfo_key_sync``
``142``               ``lfo_wave`` (triangle, saw down, saw up, square, sine, sample & hold)
``143``               ``pitch_mod_sens`` (0..7)
``144``               ``transpose`` (0..48, 24 = none)
``145 .. 154``        ``name_char1..10``: the voice name, 7-bit ASCII codes (no effect on sound;
                      fixed in the prior, so no model learns them)
====================  ============================================================================

Values: the *internal* value is the native DX7 integer (``step = 1``), and normalized is
``(v - min) / (max - min)``; :func:`vced_from_normalized` / :func:`normalized_from_vced` convert
whole voices. Control values (``SynthSpec.internal_to_control``) are the native integers except
``detune`` (-7..+7), ``transpose`` (-24..+24 semitones) and ``algorithm`` (1..32), as Dexed
displays them. Byte 155 of the 156 bytes ``load_sysex`` takes (Dexed's operator on/off mask) is
ignored by the engine and is not a parameter.

The sampling prior (:func:`sample`)
-----------------------------------
Uniform random DX7 voices are mostly near-silent: a carrier's level is
``A = 64 (sol(L) >> 1) + 32 sol(OL) - 4256`` in 0.0235 dB units (README §7), so an output level
and an envelope level that are both around 50 put it 73 dB below full scale, and slow attack
rates, keyboard scaling far from the note and deep amplitude modulation do the rest. The prior
of :func:`sample` is hand-designed from the DX7's level, rate and routing laws (it was **not**
fitted to any voice bank, and the 128 DX7 ROM voices are kept out of it):

* algorithm uniform over 1..32; the algorithm decides which operators are carriers;
* carriers: output level 75..99, attack level L1 80..99, L2 60..99, sustain L3 50..99 (0 in a
  quarter of voices: percussive), release L4 0 (90 %), attack rate R1 35..99, release R4 25..99,
  ratio mode 95 % with coarse 0..15 weighted towards low ratios (~ 1/(c+1)^1.5);
* modulators: output level 0 (10 %, an idle operator) or 35..95 (index 0.05..9 rad at EG level 99),
  levels and rates broad, ratio mode 85 % with coarse 0..31 weighted ~ 1/(c+1), fixed mode
  otherwise;
* keyboard level scaling off in half of the operators, shallow otherwise (depth <= 30 on
  carriers); amp-mod sensitivity 0 in 60 %; fine 0 in 60 %; detune, rate scaling and
  velocity sensitivity uniform;
* pitch EG flat (all levels 50) in 70 % of voices, a modest sweep (levels 50 +- ~10, the sustain
  level mostly 50) otherwise; LFO pitch / amp depth 0 in 60 % each, every LFO wave (S&H
  included) equally likely; feedback uniform; transpose 24 in 70 %, 12..36 otherwise.

Measured (note 60, velocity 100, held 0.75 s, 1 s render at 16 kHz, RMS over the render on
dexed-py's scale, where a full-level sine carrier peaks at ~1.0; 2000 voices each, seeds 0..3):

=====================================  ====================  ====================  ===========
prior                                  RMS < -60 dBFS        RMS < -40 dBFS        median RMS
=====================================  ====================  ====================  ===========
uniform (``DEXED.sample_normalized``)  19.9 % (near-silent)  50.6 %                -40 dBFS
:func:`sample`                         0.0 % (0 of 2000)     1.5 %                 -17 dBFS
=====================================  ====================  ====================  ===========

At notes 36, 48, 72 and 84 (500 voices each) the prior gives 0.2 % below -60 dBFS and
1.8..3.0 % below -40 dBFS. ``tests/test_dexed_engine.py`` checks, on 200 voices, that the prior
stays under 2 % near-silent and 6 % below -40 dBFS, and that the uniform prior does not.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from proxies.params import ParamSpec, SynthSpec

__all__ = [
    "ALGORITHM_CARRIERS",
    "CURVES",
    "DEXED",
    "GLOBAL_FIELDS",
    "LFO_WAVES",
    "N_OPERATORS",
    "NAME_LENGTH",
    "OP_FIELDS",
    "OP_BLOCK",
    "OSC_MODES",
    "VCED_SIZE",
    "INIT_VOICE",
    "carrier_mask",
    "normalized_from_vced",
    "op_byte",
    "sample",
    "vced_from_normalized",
]

VCED_SIZE = 155
N_OPERATORS = 6
OP_BLOCK = 21
NAME_LENGTH = 10
NAME_OFFSET = 145

CURVES = ("-LIN", "-EXP", "+EXP", "+LIN")
LFO_WAVES = ("triangle", "saw_down", "saw_up", "square", "sine", "sample_hold")
OSC_MODES = ("ratio", "fixed")
OFF_ON = ("off", "on")
ALGORITHMS = tuple(str(a) for a in range(1, 33))

#: DX7 carriers (operator numbers 1..6) of algorithms 1..32 (index 0..31), README §4.
ALGORITHM_CARRIERS: tuple[tuple[int, ...], ...] = (
    (1, 3), (1, 3), (1, 4), (1, 4), (1, 3, 5), (1, 3, 5), (1, 3), (1, 3), (1, 3), (1, 4), (1, 4), (1, 3),
    (1, 3), (1, 3), (1, 3), (1,), (1,), (1,), (1, 4, 5), (1, 2, 4), (1, 2, 4, 5), (1, 3, 4, 5), (1, 2, 4, 5),
    (1, 2, 3, 4, 5), (1, 2, 3, 4, 5), (1, 2, 4), (1, 2, 4), (1, 3, 6), (1, 2, 3, 5), (1, 2, 3, 6),
    (1, 2, 3, 4, 5), (1, 2, 3, 4, 5, 6),
)

#: (field, minimum, maximum, choices, description) of the 21 bytes of one operator block.
OP_FIELDS: tuple[tuple[str, int, int, tuple[str, ...] | None, str], ...] = (
    ("eg_rate1", 0, 99, None, "EG rate 1 (attack); q = (R 41 >> 6) + rate scaling"),
    ("eg_rate2", 0, 99, None, "EG rate 2 (decay 1)"),
    ("eg_rate3", 0, 99, None, "EG rate 3 (decay 2)"),
    ("eg_rate4", 0, 99, None, "EG rate 4 (release)"),
    ("eg_level1", 0, 99, None, "EG level 1 (attack target); A = max(16, 64 (sol(L) >> 1) + outlevel - 4256)"),
    ("eg_level2", 0, 99, None, "EG level 2"),
    ("eg_level3", 0, 99, None, "EG level 3 (sustain)"),
    ("eg_level4", 0, 99, None, "EG level 4 (release target; the start level is 0)"),
    ("kls_breakpoint", 0, 99, None, "keyboard level scaling break point: MIDI note BP + 17 (BP 39 = note 56)"),
    ("kls_left_depth", 0, 99, None, "keyboard level scaling depth below the break point"),
    ("kls_right_depth", 0, 99, None, "keyboard level scaling depth above the break point"),
    ("kls_left_curve", 0, 3, CURVES, "keyboard level scaling curve below the break point"),
    ("kls_right_curve", 0, 3, CURVES, "keyboard level scaling curve above the break point"),
    ("rate_scaling", 0, 7, None, "keyboard rate scaling: q += (RS clamp(note div 3 - 7, 0, 31)) >> 3"),
    ("amp_mod_sens", 0, 3, None, "LFO amplitude-modulation sensitivity (any AMS >= 1 costs -1.07 dB)"),
    ("key_vel_sens", 0, 7, None, "key velocity sensitivity"),
    ("output_level", 0, 99, None, "operator output level (0..99; 0 and 1 are silent)"),
    ("osc_mode", 0, 1, OSC_MODES, "oscillator mode: ratio to the note, or fixed frequency"),
    ("freq_coarse", 0, 31, None, "ratio: coarse ratio (0 = 0.5); fixed: 10^(coarse & 3) Hz"),
    ("freq_fine", 0, 99, None, "ratio: x (1 + fine/100); fixed: x 10^(fine/100)"),
    ("detune", 0, 14, None, "detune, 7 = centre (about 1.2 cents per step at note 60)"),
)

#: (name, VCED byte, minimum, maximum, choices, description) of the global bytes 126..144.
GLOBAL_FIELDS: tuple[tuple[str, int, int, int, tuple[str, ...] | None, str], ...] = (
    ("pitch_eg_rate1", 126, 0, 99, None, "pitch EG rate 1"),
    ("pitch_eg_rate2", 127, 0, 99, None, "pitch EG rate 2"),
    ("pitch_eg_rate3", 128, 0, 99, None, "pitch EG rate 3"),
    ("pitch_eg_rate4", 129, 0, 99, None, "pitch EG rate 4 (release)"),
    ("pitch_eg_level1", 130, 0, 99, None, "pitch EG level 1; 50 = no shift, 0 = -4 oct, 99 = +3.97 oct"),
    ("pitch_eg_level2", 131, 0, 99, None, "pitch EG level 2"),
    ("pitch_eg_level3", 132, 0, 99, None, "pitch EG level 3 (sustain)"),
    ("pitch_eg_level4", 133, 0, 99, None, "pitch EG level 4 (start and release target)"),
    ("algorithm", 134, 0, 31, ALGORITHMS, "DX7 algorithm 1..32 (stored as 0..31)"),
    ("feedback", 135, 0, 7, None, "feedback of the algorithm's feedback operator (0 = off)"),
    ("osc_key_sync", 136, 0, 1, OFF_ON, "oscillator key sync (no effect in dexed-py: phases always restart)"),
    ("lfo_speed", 137, 0, 99, None, "LFO speed: 0.065 Hz (0) .. 5.8 Hz (35) .. 50.9 Hz (99)"),
    ("lfo_delay", 138, 0, 99, None, "LFO delay (99: 2.66 s hold, full depth at 3.33 s)"),
    ("lfo_pitch_mod_depth", 139, 0, 99, None, "LFO pitch modulation depth (PMD)"),
    ("lfo_amp_mod_depth", 140, 0, 99, None, "LFO amplitude modulation depth (AMD)"),
    ("lfo_key_sync", 141, 0, 1, OFF_ON, "LFO key sync: the LFO phase starts at 2^31 - 1 instead of 0"),
    ("lfo_wave", 142, 0, 5, LFO_WAVES, "LFO waveform"),
    ("pitch_mod_sens", 143, 0, 7, None, "LFO pitch modulation sensitivity (PMS; 7 with PMD 99: +-1 octave)"),
    ("transpose", 144, 0, 48, None, "transpose in semitones, 24 = none (also moves KLS and rate scaling)"),
)

_INIT_NAME = "INIT VOICE"


def op_byte(op: int, field: str) -> int:
    """VCED byte (= parameter index) of operator ``op`` (1..6, DX7 numbering) field ``field``."""
    if not 1 <= int(op) <= N_OPERATORS:
        raise ValueError(f"operator numbers run 1..6 (DX7 numbering), got {op!r}")
    names = [f[0] for f in OP_FIELDS]
    if field not in names:
        raise ValueError(f"unknown operator field {field!r}; expected one of: {', '.join(names)}")
    return OP_BLOCK * (N_OPERATORS - int(op)) + names.index(field)


def _init_voice() -> np.ndarray:
    """The DX7 / Dexed init voice: OP1 alone at full level (a sine), everything else neutral."""
    v = np.zeros(VCED_SIZE, dtype=np.int32)
    for k in range(N_OPERATORS):
        b = OP_BLOCK * k
        v[b:b + 4] = 99
        v[b + 4:b + 8] = (99, 99, 99, 0)
        v[b + 8] = 39
        v[b + 18] = 1  # coarse 1
        v[b + 20] = 7  # detune centre
    v[op_byte(1, "output_level")] = 99
    v[126:130] = 99
    v[130:134] = 50
    v[136] = 1  # osc key sync on
    v[137] = 35  # LFO speed
    v[141] = 1  # LFO key sync on
    v[143] = 3  # PMS
    v[144] = 24  # transpose: none
    v[NAME_OFFSET:] = np.frombuffer(_INIT_NAME.encode("ascii"), dtype=np.uint8)
    return v


#: The init voice as VCED integers ``[155]`` (read-only).
INIT_VOICE = _init_voice()
INIT_VOICE.setflags(write=False)


def _build() -> SynthSpec:
    params: list[ParamSpec] = []
    for k in range(N_OPERATORS):
        op = N_OPERATORS - k
        for j, (field, lo, hi, choices, what) in enumerate(OP_FIELDS):
            index = OP_BLOCK * k + j
            extra = dict(offset=-7.0) if field == "detune" else {}
            params.append(ParamSpec(f"op{op}_{field}", index, float(lo), float(hi), 1.0,
                                    default=float(INIT_VOICE[index]), choices=choices,
                                    description=f"OP{op} {what} (VCED byte {index})", **extra))
    for name, index, lo, hi, choices, what in GLOBAL_FIELDS:
        extra = {}
        prior = "uniform"
        if name == "transpose":
            extra = dict(offset=-24.0, unit="semitones")
        elif name == "algorithm":
            extra = dict(offset=1.0)
        elif name == "osc_key_sync":
            prior = "fixed"
        params.append(ParamSpec(name, index, float(lo), float(hi), 1.0, default=float(INIT_VOICE[index]),
                                choices=choices, prior=prior, description=f"{what} (VCED byte {index})", **extra))
    for c in range(NAME_LENGTH):
        index = NAME_OFFSET + c
        params.append(ParamSpec(f"name_char{c + 1}", index, 0.0, 127.0, 1.0, default=float(INIT_VOICE[index]),
                                prior="fixed", description=f"voice name character {c + 1}, 7-bit ASCII code "
                                f"(no effect on sound; VCED byte {index})"))
    return SynthSpec("dexed", tuple(params))


#: The 155 values of a DX7 voice in VCED order (parameter index = VCED byte).
DEXED = _build()
assert DEXED.n_params == VCED_SIZE

_MIN = DEXED.minimum.astype(np.int64)
_MAX = DEXED.maximum.astype(np.int64)
_SPAN = (_MAX - _MIN).astype(np.float64)


# ---------------------------------------------------------------------------------- values
def vced_from_normalized(normalized, source: str = "normalized") -> np.ndarray:
    """Normalized voices ``[..., 155]`` in [0, 1] -> VCED integers ``[..., 155]`` (int32).

    Each value goes to the nearest native integer (``round(n (max - min)) + min``, halves away
    from zero, as :meth:`SynthSpec.normalized_to_internal`). Raises ValueError for a wrong last
    axis, non-finite values or values outside [0, 1].
    """
    n = DEXED.check_normalized(normalized, source=source)
    k = np.floor(n * _SPAN + 0.5)
    return (k + _MIN).astype(np.int32)


def normalized_from_vced(vced, source: str = "VCED") -> np.ndarray:
    """VCED integers ``[..., 155]`` -> normalized ``(v - min) / (max - min)`` (float64).

    Raises ValueError naming the first parameter outside its native range.
    """
    v = np.asarray(vced)
    if v.dtype.kind not in "iub":
        v64 = np.asarray(v, dtype=np.float64)
        if not np.all(np.isfinite(v64)) or np.any(v64 != np.round(v64)):
            raise ValueError(f"{source}: VCED values must be integers, got non-integer values")
        v = v64.astype(np.int64)
    if v.shape[-1:] != (VCED_SIZE,):
        raise ValueError(f"{source}: expected an array whose last axis holds {VCED_SIZE} VCED values, got shape "
                         f"{v.shape}")
    v = v.astype(np.int64)
    bad = (v < _MIN) | (v > _MAX)
    if bad.any():
        i = int(np.argwhere(bad)[0][-1])
        raise ValueError(f"{source}: {DEXED.params[i].name} (VCED byte {i}) is {int(v[bad][0])}, outside its range "
                         f"{_MIN[i]}..{_MAX[i]}")
    return (v - _MIN) / _SPAN


def carrier_mask(algorithm) -> np.ndarray:
    """Boolean ``[..., 6]``: which of OP1..OP6 (column 0 = OP1) are carriers of ``algorithm``
    (0..31, the VCED byte)."""
    table = np.zeros((32, N_OPERATORS), dtype=bool)
    for a, ops in enumerate(ALGORITHM_CARRIERS):
        table[a, [o - 1 for o in ops]] = True
    return table[np.asarray(algorithm, dtype=np.int64)]


# --------------------------------------------------------------------------------- the prior
def _weighted(rng: np.random.Generator, n: int, values: np.ndarray, power: float) -> np.ndarray:
    w = 1.0 / (values + 1.0) ** power
    return rng.choice(values, size=n, p=w / w.sum())


def _maybe(rng: np.random.Generator, p: float, value, other: np.ndarray) -> np.ndarray:
    """``value`` with probability ``p``, else ``other`` (elementwise)."""
    return np.where(rng.random(other.shape) < p, value, other)


def sample(rng: np.random.Generator, n: int, frozen: Mapping[str, float] | None = None) -> np.ndarray:
    """``n`` DX7 voices from the hand-designed prior (module docstring), normalized ``[n, 155]``.

    Args:
        rng: NumPy generator (the only source of randomness).
        n: number of voices.
        frozen: ``{parameter name: normalized value}`` held fixed (snapped to the grid). A frozen
            ``algorithm`` also decides which operators are sampled as carriers.

    Returns:
        float64 ``[n, 155]`` on the native integer grid; ``osc_key_sync`` and the name are the
        init voice's (fixed parameters).
    """
    frozen = dict(frozen or {})
    for name in frozen:
        DEXED.index_of(name)
    n = int(n)
    ri = lambda lo, hi: rng.integers(lo, hi + 1, size=n)  # noqa: E731  (inclusive)
    v = np.tile(INIT_VOICE.astype(np.int64), (n, 1))

    alg = ri(0, 31)
    if "algorithm" in frozen:
        alg = np.full(n, int(vced_from_normalized(_frozen_row(frozen))[DEXED.index_of("algorithm")]))
    car = carrier_mask(alg)  # [n, 6], column 0 = OP1
    for op in range(1, N_OPERATORS + 1):
        c = car[:, op - 1]
        b = op_byte(op, "eg_rate1")
        # envelope rates R1..R4 and levels L1..L4
        v[:, b + 0] = np.where(c, ri(35, 99), ri(15, 99))
        v[:, b + 1] = ri(15, 99)
        v[:, b + 2] = ri(10, 99)
        v[:, b + 3] = np.where(c, ri(25, 99), ri(15, 99))
        v[:, b + 4] = np.where(c, ri(80, 99), ri(40, 99))
        v[:, b + 5] = np.where(c, ri(60, 99), ri(20, 99))
        v[:, b + 6] = np.where(c, _maybe(rng, 0.25, 0, ri(50, 99)), ri(0, 99))
        v[:, b + 7] = np.where(c, _maybe(rng, 0.9, 0, ri(0, 60)), _maybe(rng, 0.5, 0, ri(0, 99)))
        # keyboard level scaling: off in half of the operators, shallow on carriers
        depth_max = np.where(c, 30, 60)
        for off in (9, 10):
            d = np.floor(rng.random(n) * (depth_max + 1)).astype(np.int64)
            v[:, b + off] = _maybe(rng, 0.5, 0, d)
        v[:, b + 8] = ri(0, 99)
        v[:, b + 11] = ri(0, 3)
        v[:, b + 12] = ri(0, 3)
        v[:, b + 13] = ri(0, 7)
        v[:, b + 14] = _maybe(rng, 0.6, 0, ri(1, 3))
        v[:, b + 15] = ri(0, 7)
        v[:, b + 16] = np.where(c, ri(75, 99), _maybe(rng, 0.1, 0, ri(35, 95)))
        # frequency: ratio mostly, low ratios favoured (carriers more so)
        fixed = rng.random(n) < np.where(c, 0.05, 0.15)
        v[:, b + 17] = fixed.astype(np.int64)
        coarse_ratio = np.where(c, _weighted(rng, n, np.arange(16.0), 1.5), _weighted(rng, n, np.arange(32.0), 1.0))
        v[:, b + 18] = np.where(fixed, ri(1, 3), coarse_ratio).astype(np.int64)
        v[:, b + 19] = np.where(fixed, ri(0, 99), _maybe(rng, 0.6, 0, ri(1, 99)))
        v[:, b + 20] = ri(0, 14)

    # pitch EG: flat in 70 % of voices, a modest sweep that settles near pitch otherwise
    sweep = rng.random(n) < 0.3
    v[:, 126:130] = np.where(sweep[:, None], rng.integers(0, 100, size=(n, 4)), 99)
    lv = np.clip(np.round(50 + rng.normal(0, 10, size=(n, 4))), 0, 99).astype(np.int64)
    lv[:, 2] = _maybe(rng, 0.7, 50, np.clip(np.round(50 + rng.normal(0, 3, size=n)), 0, 99).astype(np.int64))
    v[:, 130:134] = np.where(sweep[:, None], lv, 50)
    v[:, 134] = alg
    v[:, 135] = ri(0, 7)
    v[:, 137] = ri(0, 99)
    v[:, 138] = ri(0, 99)
    v[:, 139] = _maybe(rng, 0.6, 0, ri(1, 99))
    v[:, 140] = _maybe(rng, 0.6, 0, ri(1, 99))
    v[:, 141] = ri(0, 1)
    v[:, 142] = ri(0, 5)
    v[:, 143] = ri(0, 7)
    v[:, 144] = _maybe(rng, 0.7, 24, ri(12, 36))

    out = normalized_from_vced(v, source="prior")
    if frozen:
        row = DEXED.snap_normalized(_frozen_row(frozen)).astype(np.float64)
        for name in frozen:
            i = DEXED.index_of(name)
            out[:, i] = row[i]
    return out


def _frozen_row(frozen: Mapping[str, float]) -> np.ndarray:
    row = DEXED.defaults_normalized.copy()
    for name, value in frozen.items():
        x = float(value)
        if not 0.0 <= x <= 1.0:
            raise ValueError(f"frozen {name!r} = {value!r}: normalized values must lie in [0, 1]")
        row[DEXED.index_of(name)] = x
    return row
