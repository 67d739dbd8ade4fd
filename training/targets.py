"""Target sounds: reading audio files, conditioning them for a run, estimating their note.

Used by ``training.match`` (one file) and ``training.evaluate`` (a folder). Every bad file
fails with :class:`training.cli.UsageError` naming the problem and the fix, before JAX loads.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from training.cli import _err

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".mp3", ".au", ".caf", ".w64")
MAX_READ_S = 60.0  # longer files: only the first minute is read
SILENCE_PEAK = 1e-4  # -80 dBFS
LEAD_SILENCE_DB = -60.0  # leading samples quieter than this (re peak) are dropped
MAX_TRANSPOSE = 36  # semitones the model input may be shifted before we refuse
MIN_RATE, MAX_RATE = 4000, 384000  # sample rates instruments use; others are refused
MIN_TARGET_S = 0.02  # shorter files cannot hold a note
DC_HZ = 10.0  # a file with no energy above this is a DC offset, not a sound
MAX_PEAK = 1000.0  # +60 dBFS: samples beyond this are not audio scaled to +-1 (refused); 1..MAX_PEAK is normalised

@dataclass
class Target:
    """A target conditioned for a run.

    Attributes:
        audio: [2, n_samples] float32 at the run's sample rate: what every distance compares to.
        model_input: [2, n_samples] float32, ``audio`` transposed to the run's training note
            (identical to ``audio`` when the notes agree): what the encoder hears.
        note: MIDI note the plugin and the proxy play.
        note_source: ``given`` (``--note``), ``estimated`` (pYIN) or ``fallback`` (no pitch found).
        f0_hz: median pYIN f0 (None when not estimated or unvoiced).
        messages: what was done to the file, for the user.
        source: file path, sample rate, channels and duration of the original.
    """

    audio: np.ndarray
    model_input: np.ndarray
    note: int
    note_source: str
    f0_hz: float | None
    messages: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    # the whole sound (prepare_whole_target): ``audio`` is at ``sample_rate`` and lasts ``duration_s``;
    # the note is released after ``hold_s`` (``hold_source``: given / estimated / whole)
    sample_rate: int = 0
    duration_s: float = 0.0
    hold_s: float = 0.0
    hold_source: str = ""
    model_note: int = 0  # the note the encoder is told (the target's, or the nearest one it was trained on)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int, dict[str, Any]]:
    """(audio [channels, T] float64, sample rate, info) of an audio file; :class:`MatchError`
    for a missing, unreadable, empty, non-finite or silent file. Reads at most ``MAX_READ_S``."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise _err("target", "an audio file (wav, flac, ogg, ...)", f"{str(p)!r}, which does not exist",
                   "check the path")
    if p.is_dir():
        raise _err("target", "an audio file", f"{str(p)!r}, which is a directory", "give one file")
    if not p.is_file():
        raise _err("target", "an audio file", f"{str(p)!r}, which is not a regular file (a device or a pipe)",
                   "give a file on disk")
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as e:
        raise _err("target", "a readable audio file", f"{str(p)!r}, which cannot be read ({e.strerror or e})",
                   "fix the file's permissions (chmod u+r) or copy it somewhere readable") from None
    try:
        info = sf.info(str(p))
        frames = min(int(info.frames), int(MAX_READ_S * info.samplerate)) if info.frames > 0 else -1
        data, sr = sf.read(str(p), frames=frames, dtype="float64", always_2d=True)
    except Exception as e:  # libsndfile's errors are RuntimeError / LibsndfileError / TypeError
        raise _err("target", "an audio file libsndfile can decode (wav, flac, ogg, aiff, mp3)",
                   f"{str(p)!r} ({type(e).__name__}: {str(e).strip() or 'unreadable'})",
                   "convert it, e.g. `ffmpeg -i in.m4a out.wav`") from None
    audio = np.asarray(data, dtype=np.float64).T
    meta = {"path": str(p), "sample_rate": int(sr), "channels": int(audio.shape[0]),
            "seconds": float(info.frames) / sr if info.frames > 0 else audio.shape[1] / sr,
            "format": f"{info.format}/{info.subtype}"}
    if audio.shape[1] == 0:
        raise _err("target", "audio with at least one sample", f"an empty file {str(p)!r}",
                   "record or export the sound again")
    if not MIN_RATE <= sr <= MAX_RATE:
        raise _err("target", f"a sample rate that instruments use ({MIN_RATE}..{MAX_RATE} Hz)",
                   f"{sr} Hz in {str(p)!r}", "re-export the file at 44100 or 48000 Hz (a wrong rate in the header "
                   "is a broken export)")
    if audio.shape[1] < MIN_TARGET_S * sr:
        raise _err("target", f"a sound at least {MIN_TARGET_S * 1000:.0f} ms long (long enough to hold a note)",
                   f"{audio.shape[1]} sample(s) = {audio.shape[1] / sr * 1000:.2g} ms in {str(p)!r}",
                   "give the whole sound, not a fragment")
    if not np.all(np.isfinite(audio)):
        bad = int((~np.isfinite(audio)).sum())
        raise _err("target", "finite samples", f"{bad} NaN/inf sample(s) in {str(p)!r}",
                   "re-export the file (a float wav with NaN comes from a broken render)")
    peak = float(np.max(np.abs(audio)))
    if peak < SILENCE_PEAK:
        db = 20 * math.log10(peak) if peak > 0 else -math.inf
        raise _err("target", f"a sound (peak above {20 * math.log10(SILENCE_PEAK):.0f} dBFS)",
                   f"silence (peak {db:.1f} dBFS) in {str(p)!r}", "give a file that contains the sound")
    if peak > MAX_PEAK:
        raise _err("target", f"samples scaled to full scale +-1 (peaks up to {MAX_PEAK:g} are normalised)",
                   f"peaks of {peak:.3g} ({20 * math.log10(peak):.0f} dBFS) in {str(p)!r}",
                   "normalise the file to -1 dBFS (e.g. `sox in.wav out.wav gain -n -1`); float files with such "
                   "values are usually raw data, not audio")
    ac = np.stack([_above(ch, sr, DC_HZ) for ch in audio])
    if float(np.max(np.abs(ac))) < SILENCE_PEAK or float(np.sum(ac ** 2)) < 1e-6 * float(np.sum(audio ** 2)):
        raise _err("target", f"a sound with energy above {DC_HZ:g} Hz",
                   f"a DC offset (or a drift slower than {DC_HZ:g} Hz) only in {str(p)!r}",
                   "give a file that contains the sound (this one would play as silence)")
    if peak > 1.0:
        audio = audio / peak
        meta["normalised_from_peak"] = peak
    return audio, int(sr), meta


def _above(x: np.ndarray, sample_rate: int, hz: float) -> np.ndarray:
    """``x`` [T] with everything below ``hz`` removed (FFT; at least the mean)."""
    spec = np.fft.rfft(x)
    cut = max(1, int(math.ceil(hz * len(x) / sample_rate)))
    spec[:cut] = 0
    return np.fft.irfft(spec, n=len(x))


def condition_audio(audio: np.ndarray, sample_rate: int, run_rate: int, n_samples: int,
                    say: Callable[[str], None], channels: int = 2) -> np.ndarray:
    """Audio [C, T] at ``sample_rate`` -> [channels, n_samples] float32 at ``run_rate`` (the synth's
    channels): channels matched, resampled, leading silence dropped, trimmed or zero-padded.
    ``say`` hears every step."""
    import librosa

    c = audio.shape[0]
    if c != channels:
        if c == 1:
            say(f"mono target: each of the synth's {channels} channels is compared with it")
        elif channels == 1:
            say(f"{c}-channel target mixed down to mono (the synth is mono)")
        else:
            say(f"{c}-channel target mixed down to mono (used for each of the synth's {channels} channels)")
        audio = np.repeat(audio.mean(axis=0, keepdims=True), channels, axis=0)
    if sample_rate != run_rate:
        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=run_rate, res_type="soxr_hq", axis=-1)
        say(f"resampled from {sample_rate} Hz to the run's {run_rate} Hz")
    peak = float(np.max(np.abs(audio)))
    loud = np.flatnonzero(np.max(np.abs(audio), axis=0) > peak * 10 ** (LEAD_SILENCE_DB / 20))
    start = int(loud[0]) if len(loud) else 0
    if start > 0:
        audio = audio[:, start:]
        if start / run_rate >= 0.001:
            say(f"dropped {start / run_rate * 1000:.0f} ms of leading silence (below {LEAD_SILENCE_DB:.0f} dB re "
                "peak): the plugin's note starts at sample 0")
    t = audio.shape[1]
    if t > n_samples:
        say(f"trimmed from {t / run_rate:.3f} s to the model's window of {n_samples / run_rate:.3f} s "
            "(only the start of the sound is matched)")
        audio = audio[:, :n_samples]
    elif t < n_samples:
        say(f"padded with silence from {t / run_rate:.3f} s to the model's window of {n_samples / run_rate:.3f} s")
        audio = np.pad(audio, ((0, 0), (0, n_samples - t)))
    return np.ascontiguousarray(audio, dtype=np.float32)


def estimate_note(audio: np.ndarray, sample_rate: int) -> tuple[int | None, float | None, float]:
    """(nearest MIDI note, median f0 in Hz, voiced fraction) of audio [2, T] by pYIN over C1..C8.

    The pitch counts as found when at least a quarter of the frames (and 3) are voiced with a
    voicing probability of 0.5 or more and their f0 agree (median absolute deviation under a
    semitone); otherwise (None, None, fraction): noise, drums and chords have no single note."""
    import librosa

    mono = np.asarray(audio, np.float64).mean(axis=0)
    frame = 2048 if sample_rate >= 16000 else 1024
    f0, voiced, prob = librosa.pyin(mono, fmin=librosa.note_to_hz("C1"), fmax=min(librosa.note_to_hz("C8"),
                                 sample_rate / 4), sr=sample_rate, frame_length=frame)
    good = voiced & np.isfinite(f0) & (prob >= 0.5)
    fraction = float(good.mean()) if len(good) else 0.0
    if good.sum() < 3 or fraction < 0.25:
        return None, None, fraction
    midi = librosa.hz_to_midi(f0[good])
    if float(np.median(np.abs(midi - np.median(midi)))) >= 1.0:
        return None, None, fraction
    hz = float(np.median(f0[good]))
    return int(np.clip(round(float(librosa.hz_to_midi(hz))), 0, 127)), hz, fraction


def _reader(path: str | os.PathLike, say: Callable[[str], None]):
    """(audio, rate, meta, messages, tell) of a target file; ``tell`` records and says."""
    raw, sr, meta = read_audio(path)
    messages: list[str] = []

    def tell(m: str) -> None:
        messages.append(m)
        say(m)

    if "normalised_from_peak" in meta:
        pk = meta["normalised_from_peak"]
        tell(f"the file peaks at {pk:.3g} ({20 * math.log10(pk):+.1f} dBFS), beyond full scale: normalised to a peak "
             "of 1.0 (0 dBFS) before matching")
    return raw, sr, meta, messages, tell


def _note_of(window: np.ndarray, data: Any, note: int | str, tell: Callable[[str], None]
             ) -> tuple[int, str, float | None]:
    """(MIDI note, how it was found, median f0) of a window at the run's rate: ``note`` when given,
    else pYIN (falling back to ``data.note`` without a stable pitch)."""
    import librosa

    if note != "auto":
        return int(note), "given", None
    est, f0, frac = estimate_note(window, data.sample_rate)
    if est is None:
        tell(f"no stable pitch found (pYIN voiced in {frac:.0%} of frames): playing note {int(data.note)}; pass "
             "--note MIDI to choose one")
        return int(data.note), "fallback", None
    tell(f"estimated note {est} ({librosa.midi_to_note(est)}, median f0 {f0:.1f} Hz, voiced in {frac:.0%} of frames)")
    return est, "estimated", f0


def heard(window: np.ndarray, data: Any, midi: int, note_range: tuple[int, ...],
           tell: Callable[[str], None]) -> tuple[np.ndarray, int]:
    """(what the encoder hears [C, T], the note it is told): the window as it is when the model was
    trained on ``midi`` (``note_range``; empty: ``data.note`` only), else transposed to the nearest
    note it was trained on (at most ``MAX_TRANSPOSE`` semitones)."""
    import librosa

    lo, hi = (note_range[0], note_range[1]) if note_range else (int(data.note), int(data.note))
    model_note = int(min(max(midi, lo), hi))
    shift = model_note - midi
    if abs(shift) > MAX_TRANSPOSE:
        raise _err("note", f"within {MAX_TRANSPOSE} semitones of the notes the model was trained on ({lo}..{hi})",
                   midi, "pass --note closer to them, or train a model on nearer notes")
    if not shift:
        return window, model_note
    tell(f"the model hears the target transposed by {shift:+d} semitones to note {model_note} (it was trained on "
         f"notes {lo}..{hi}); the synth plays note {midi}")
    return np.stack([librosa.effects.pitch_shift(ch, sr=data.sample_rate, n_steps=float(shift))
                     for ch in window.astype(np.float64)]).astype(np.float32), model_note


def prepare_target(path: str | os.PathLike, data: Any, note: int | str = "auto",
                   say: Callable[[str], None] = print) -> Target:
    """Read and condition a target for a run whose data config is ``data`` (``--note``: ``auto``
    or a MIDI note): the run's rate and window; the encoder hears it transposed to ``data.note``."""
    raw, sr, meta, messages, tell = _reader(path, say)
    from proxies.synth import get_synth

    channels = get_synth(data.synth, data.spec or None).channels
    audio = condition_audio(raw, sr, data.sample_rate, data.n_samples, tell, channels)
    if float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise _err("target", "a sound inside the matched window", "silence there", "trim the file to the sound")
    midi, source, f0 = _note_of(audio, data, note, tell)
    model_input, model_note = heard(audio, data, midi, (), tell)
    return Target(audio, model_input, midi, source, f0, messages, meta, model_note=model_note)


#: the whole sound is judged up to this length (longer sounds: their start, and it is said)
MAX_JUDGE_S = 10.0
#: judged at the file's own rate inside these bounds (outside, resampled to the nearest bound)
JUDGE_RATES = (16000, 48000)
#: judged lengths and note lengths are rounded to these grids, so sounds of about the same length
#: share one compiled proxy (a note-off moves the proxy's block layout: training/match.py)
DURATION_STEP_S, HOLD_STEP_S = 0.25, 0.05


def prepare_whole_target(path: str | os.PathLike, data: Any, note: int | str = "auto", hold: float | None = None,
                         say: Callable[[str], None] = print, max_s: float = MAX_JUDGE_S,
                         note_range: tuple[int, ...] = ()) -> Target:
    """Read a target for matching the whole sound: ``audio`` at its own rate (within
    :data:`JUDGE_RATES`), channels matched to the synth, leading silence dropped, up to where it
    falls below -60 dB re peak (at most ``max_s``, said when cut), rounded up to
    :data:`DURATION_STEP_S`; the note-off at ``hold`` seconds or estimated from the envelope
    (``training.envelope.estimate_hold``); ``model_input`` the first window at the run's rate
    (``data``), transposed into ``note_range`` (the notes the model was trained on) if needed."""
    from training.envelope import estimate_hold

    raw, sr, meta, messages, tell = _reader(path, say)
    from proxies.synth import get_synth

    channels = get_synth(data.synth, data.spec or None).channels
    rate = int(min(max(sr, JUDGE_RATES[0]), JUDGE_RATES[1]))
    whole = condition_audio(raw, sr, rate, raw.shape[1] * rate // sr + 1, lambda m: None if "padded" in m else tell(m),
                            channels)
    est = estimate_hold(whole, rate)  # its times count from its own onset (-40 dB), est.onset_s into `whole`
    end_s = min(float(est.onset_s + est.sound_end_s) + 0.05, whole.shape[1] / rate)
    if end_s > max_s:
        tell(f"the sound lasts {end_s:.2f} s: its first {max_s:g} s are matched (the cap; pass a shorter file to "
             "choose the part)")
        end_s = max_s
    duration = max(0.5, math.ceil(end_s / DURATION_STEP_S - 1e-9) * DURATION_STEP_S)
    n = int(round(duration * rate))
    audio = np.pad(whole[:, :n], ((0, 0), (0, max(0, n - whole.shape[1]))))
    if float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise _err("target", "a sound inside the matched window", "silence there", "trim the file to the sound")
    if hold is not None:
        hold_s, hold_source = float(hold), "given"
        if not 0 < hold_s < duration:
            raise _err("--hold", f"seconds in (0, {duration:g}) (the judged length of this sound)", hold,
                       "give the time the note was released, or leave --hold out to estimate it")
    else:
        hold_s, hold_source = float(est.onset_s + est.hold_s), est.how
        tell(f"note length {hold_s:.2f} s ({est.message}); pass --hold SECONDS to set it")
    hold_s = min(max(HOLD_STEP_S, round(hold_s / HOLD_STEP_S) * HOLD_STEP_S), duration - HOLD_STEP_S)
    tell(f"judging the whole sound: {duration:g} s at {rate} Hz, note released at {hold_s:.2f} s")
    # the encoder's window: the start of the sound at the run's rate and length
    window = condition_audio(audio, rate, data.sample_rate, data.n_samples, lambda m: None, channels)
    midi, source, f0 = _note_of(window, data, note, tell)
    window, model_note = heard(window, data, midi, note_range, tell)
    return Target(audio, window, midi, source, f0, messages, meta, rate, duration, hold_s, hold_source, model_note)


# ------------------------------------------------------------------------------ options
