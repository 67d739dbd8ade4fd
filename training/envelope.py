"""When was the note released? The note-off and the end of a sound, from its amplitude envelope.

A held synth note rises (attack), may fall to a sustain level (decay), stays there or decays
slowly while the key is down, and falls faster into silence after the note-off (release).
:func:`estimate_hold` finds the last change from a held level to that final, faster fall:

1. envelope: Hann-weighted RMS of the mono mix over 40 ms windows every 10 ms (:func:`rms_envelope`), in
   linear amplitude re its peak and in dB;
2. candidates: frames where the smoothed envelope's slope drops (local minima of its second
   derivative, in linear amplitude: a level that turns into a fall);
3. a candidate ``k`` is the note-off when a straight line through the level held over the
   ``PRE_S`` before it (a) is left for good right at ``k`` (the envelope falls below the line by
   more than its ripple within ``KNEE_SLACK_S`` and never comes back to it), (b) the fall that
   follows is at least ``MIN_RATE_RATIO`` times steeper than the held line and reaches
   ``MIN_FALL_DB`` below it (or the end of the audio); of those whose held level is within
   ``MAX_KNEE_GAP_DB`` of the loudest one's (not a quiet tail's shelf cut by the end of the file),
   the latest wins (the earliest of a run less than ``KNEE_SLACK_S`` apart: one knee seen from a
   few frames);
   (when none is found, steps 2-3 run again on an envelope averaged over ``TREMOLO_WINDOW_S``,
   which smooths a tremolo away);
4. its time is refined to a fraction of a frame: where the held line meets a line through the
   first half (in amplitude) of the fall. That is exact for a linear-in-amplitude release
   (amsynth's) and within a few ms for an exponential one.

Without such a change the sound has no detectable note-off: it either decays all the way from
its attack (a pluck, a bell: ``hold_s`` is when it first falls ``DECAY_HOLD_DB`` below its peak)
or is still held when the audio ends (``hold_s`` is the whole sound). ``how`` says which.

Times are seconds from the sound's onset (the first sample within ``ONSET_DB`` of the peak):
``hold_s`` is what to give ``Note(hold_s=...)`` when the render starts at the onset. A limiter
or compressor on the sound (amsynth's output limiter at high ``master_vol``) keeps the level up
after the note-off: the estimate is then when the level audibly starts to fall. NumPy and SciPy
only (a few ms for a few seconds of audio).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import fftconvolve

__all__ = ["HoldEstimate", "estimate_hold", "rms_envelope"]

HOP_S = 0.010  # envelope frame step
WINDOW_S = 0.040  # Hann-weighted RMS window (flat envelopes for notes down to ~50 Hz)
TREMOLO_WINDOW_S = 0.25  # second look, when the first finds no note-off (averages tremolo above ~5 Hz)
ONSET_DB = -40.0  # the onset: first sample within this of the peak amplitude
ARRIVAL_DB = -3.0  # the attack has arrived at the first frame within this of the envelope's peak
END_DB = -60.0  # the sound ends where its envelope stays below this (re peak)
DECAY_HOLD_DB = -40.0  # no note-off: hold = when the sound first falls this far below its peak
PRE_S = 0.20  # the held level is fitted over this long before a candidate (from the attack's arrival on)
MIN_HELD_S = 0.06  # ... and needs at least this much of it
MIN_HELD_DB = -40.0  # ... at a level above this (re peak): quieter shelves are tails, not held notes
KNEE_SLACK_S = 0.08  # the envelope must leave the held line for good within this after the candidate
LEAVE_FRACTION = 0.03  # "leaving": below the held line by this fraction of its level (or 3x its ripple)
MIN_RATE_RATIO = 3.0  # the fall is at least this many times steeper than the held line
MIN_FALL_DB = 10.0  # ... and goes at least this far below it (or on to the end of the audio, >= 5 dB)
MAX_KNEE_GAP_DB = 12.0  # a note-off's held level is within this of the loudest valid one's
CURVE_SIGMA_FRAMES = 2.0  # Gaussian smoothing of the second derivative (frames)


class HoldEstimate(NamedTuple):
    """What :func:`estimate_hold` found.

    Attributes:
        hold_s: note-on to note-off (s): the ``hold_s`` of a :class:`proxies.notes.Note` that
            starts at the onset.
        sound_end_s: onset to where the sound stays below ``END_DB`` (-60 dB) re its peak (s), or
            to the end of the audio if it never gets there: the longest length worth judging.
        onset_s: the onset, seconds from the start of the audio.
        how: ``release`` (a held level turning into a faster fall: the note-off was found),
            ``decays_from_attack`` (no held level: a pluck, a bell; ``hold_s`` is when it first
            falls 40 dB below its peak, or the whole sound), ``held_to_end`` (still held when the
            audio ends: ``hold_s`` is the whole sound) or ``silent``.
        message: one sentence for the user saying what was found.
    """

    hold_s: float
    sound_end_s: float
    onset_s: float
    how: Literal["release", "decays_from_attack", "held_to_end", "silent"]
    message: str


def rms_envelope(audio: np.ndarray, sample_rate: int, hop_s: float = HOP_S,
                 window_s: float = WINDOW_S) -> tuple[np.ndarray, float]:
    """(RMS amplitude per frame [n_frames] of the mono mix, frame step in s) of audio [T] or
    [channels, T]: the square root of the Hann-weighted mean of x^2 over ``window_s``, every
    ``hop_s``; frame ``i`` is centred on sample ``i * hop`` (the signal is zero outside). The Hann
    weighting keeps a steady tone's envelope flat to ~0.1 dB whatever its period."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"audio: expected [samples] or [channels, samples], got shape {np.shape(audio)}")
    hop = max(1, int(round(hop_s * sample_rate)))
    win = np.hanning(max(3, int(round(window_s * sample_rate))) + 2)[1:-1]
    power = fftconvolve(x * x, win / win.sum(), mode="same")
    return np.sqrt(np.maximum(power[::hop], 0.0)), hop / sample_rate


def estimate_hold(audio: np.ndarray, sample_rate: int) -> HoldEstimate:
    """Estimate when the note of ``audio`` ([samples] or [channels, samples], any scale) was
    released, and where the sound ends. See the module docstring for the method."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim not in (1, 2):
        raise ValueError(f"audio: expected [samples] or [channels, samples], got shape {x.shape}")
    mono = x.mean(axis=0) if x.ndim == 2 else x
    peak = float(np.max(np.abs(mono))) if len(mono) else 0.0
    if not peak > 0 or not math.isfinite(peak):
        return HoldEstimate(0.0, 0.0, 0.0, "silent", "the sound is silent (or not finite): no note to measure")
    onset = int(np.argmax(np.abs(mono) >= peak * 10 ** (ONSET_DB / 20)))
    onset_s = onset / sample_rate
    dur_s = (len(mono) - onset) / sample_rate
    amp, dt = rms_envelope(mono[onset:], sample_rate)
    amp = amp / amp.max()
    db = 20 * np.log10(np.maximum(amp, 1e-12))
    n = len(amp)

    above = np.flatnonzero(db > END_DB)
    end = int(above[-1]) + 1  # the first frame of the silence that follows (n: none)
    sound_end_s = min(dur_s, end * dt) if end < n else dur_s
    arrival = int(np.argmax(db > ARRIVAL_DB))

    knee = _find_note_off(amp, db, arrival, end, dt)
    if knee is None:  # a tremolo hides the knee at the short window: look again over ~2 periods of it
        amp_s, _ = rms_envelope(mono[onset:], sample_rate, window_s=TREMOLO_WINDOW_S)
        amp_s = amp_s / amp_s.max()
        db_s = 20 * np.log10(np.maximum(amp_s, 1e-12))
        knee = _find_note_off(amp_s, db_s, int(np.argmax(db_s > ARRIVAL_DB)), end, dt, held_s=TREMOLO_WINDOW_S)
    if knee is not None:
        hold_s = float(np.clip(knee * dt, 0.0, dur_s))
        return HoldEstimate(hold_s, sound_end_s, onset_s, "release",
                            f"note-off at {hold_s:.3f} s: the held level turns into a faster fall there; the sound "
                            f"ends (-60 dB) at {sound_end_s:.3f} s")
    tail = db[max(arrival, n - int(round(PRE_S / dt))):n]
    if end >= n and len(tail) >= 3 and tail.min() > -30.0 and tail[0] - tail[-1] < 3.0:
        return HoldEstimate(dur_s, sound_end_s, onset_s, "held_to_end",
                            f"still held when the audio ends ({dur_s:.3f} s): no note-off is heard; hold = the "
                            "whole sound")
    p = int(np.argmax(amp))
    below = np.flatnonzero(db[p:] < DECAY_HOLD_DB)
    hold_s = min(float((p + below[0]) * dt), dur_s) if len(below) else dur_s
    where = (f"first falls {-DECAY_HOLD_DB:.0f} dB below its peak at {hold_s:.3f} s: hold = that" if len(below) else
             f"never falls {-DECAY_HOLD_DB:.0f} dB below its peak: hold = the whole sound ({dur_s:.3f} s)")
    return HoldEstimate(hold_s, sound_end_s, onset_s, "decays_from_attack",
                        f"no note-off detectable (no held level turns into a faster fall); the sound {where}")


def _find_note_off(amp: np.ndarray, db: np.ndarray, arrival: int, end: int, dt: float,
                   held_s: float = MIN_HELD_S) -> float | None:
    """The note-off in frames (fractional), or None. ``arrival``: the attack's arrival frame;
    ``end``: the first frame of the final silence (``len(amp)``: none); ``held_s``: the least held
    sound before a note-off (at least the envelope's window: a smoothed attack is no held level)."""
    n = len(amp)
    pre = max(3, int(round(PRE_S / dt)))
    held = max(3, int(round(held_s / dt)))
    slack = max(1, int(round(KNEE_SLACK_S / dt)))
    curv = gaussian_filter1d(amp, CURVE_SIGMA_FRAMES, order=2, mode="nearest")
    cand = np.flatnonzero((curv[1:-1] < curv[:-2]) & (curv[1:-1] <= curv[2:]) & (curv[1:-1] < 0)) + 1
    found: list[tuple[int, float, float]] = []  # (candidate, refined note-off, held level dB) of valid ones
    for k in cand[(cand >= arrival + held) & (cand < min(end, n - 2))]:
        knee = _knee_at(amp, db, int(k), arrival, end, pre, slack)
        if knee is not None:
            found.append((int(k), *knee))
    loudest = max((lv for _, _, lv in found), default=0.0)
    found = [f for f in found if f[2] >= loudest - MAX_KNEE_GAP_DB]  # not a tail's shelf cut by the file end
    if not found:
        return None
    # the last held level that turns into the final fall: the latest valid candidate, or the
    # earliest of the valid candidates just before it (the same knee seen from a few frames later)
    k_last, t_best, _ = found[-1]
    for k, t, _ in reversed(found[:-1]):
        if k_last - k > slack:
            break
        k_last, t_best = k, t
    return t_best


def _knee_at(amp: np.ndarray, db: np.ndarray, k: int, arrival: int, end: int, pre: int,
             slack: int) -> tuple[float, float] | None:
    """(refined note-off in frames, held level in dB) if candidate ``k`` is where a held level
    turns into the final fall (module docstring, step 3), else None."""
    n = len(amp)
    fit = _held_line(amp, max(arrival, k - pre), k - 1)
    if fit is None:
        return None
    m1, b1, ripple = fit
    level = m1 * k + b1
    if level <= 0 or 20 * math.log10(level) < MIN_HELD_DB:
        return None
    tol = max(LEAVE_FRACTION * level, 3.0 * ripple)
    idx = np.arange(k, min(end, n))
    above_line = np.flatnonzero(amp[idx] >= m1 * idx + b1 - tol)
    left = int(above_line[-1]) + 1 if len(above_line) else 0  # below the held line for good from here
    if left > slack or left >= len(idx):
        return None  # not left for good near k (it comes back to the held level later): not the final fall
    fall_db = 20 * math.log10(level) - float(db[idx].min())
    if fall_db < MIN_FALL_DB and not (end >= n and fall_db >= MIN_FALL_DB / 2):
        return None
    t = _refine(amp, m1, b1, level, k)
    if t is None or not k - slack <= t <= k + slack:
        return None
    return t, 20 * math.log10(level)


def _held_line(amp: np.ndarray, a: int, b: int) -> tuple[float, float, float] | None:
    """(slope, intercept, residual std) of a line through ``amp[a:b]`` (frames), or None if too short."""
    if b - a < 3:
        return None
    t = np.arange(a, b)
    m, c = np.polyfit(t, amp[a:b], 1)
    return float(m), float(c), float(np.std(amp[a:b] - (m * t + c)))


def _refine(amp: np.ndarray, m1: float, b1: float, level: float, k: int) -> float | None:
    """Where the held line (``m1 t + b1``) meets a line through the fall after ``k`` from its
    first 3 % to half the held level (frames, fractional); None if the fall is not at least
    ``MIN_RATE_RATIO`` times steeper than the held line."""
    n = len(amp)
    idx = np.arange(k - 1, n)
    line = m1 * idx + b1
    start = idx[amp[idx] < line * (1 - LEAVE_FRACTION)]
    half = idx[amp[idx] < 0.5 * line]
    if not len(start) or not len(half):
        return None
    a, b = int(start[0]), int(half[0])
    if b - a < 1:
        a, b = a - 1, b + 1
    seg = np.arange(a, b + 1)
    m2, b2 = np.polyfit(seg, amp[seg], 1)
    if not m2 < MIN_RATE_RATIO * min(m1, 0.0) or m2 >= -1e-6 * level:
        return None
    t = (b2 - b1) / (m1 - m2)
    return float(t)
