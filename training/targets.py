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


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int, dict[str, Any]]:
    """(audio [channels, T] float64, sample rate, info) of an audio file; :class:`MatchError`
    for a missing, unreadable, empty, non-finite or silent file. Reads at most ``MAX_READ_S``."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise _err("target", "an audio file (wav, flac, ogg, ...)", f"{str(p)!r}, which does not exist",
                   "check the path")
    if not p.is_file():
        raise _err("target", "an audio file", f"{str(p)!r}, which is a directory", "give one file")
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
    if not np.all(np.isfinite(audio)):
        bad = int((~np.isfinite(audio)).sum())
        raise _err("target", "finite samples", f"{bad} NaN/inf sample(s) in {str(p)!r}",
                   "re-export the file (a float wav with NaN comes from a broken render)")
    peak = float(np.max(np.abs(audio)))
    if peak < SILENCE_PEAK:
        db = 20 * math.log10(peak) if peak > 0 else -math.inf
        raise _err("target", f"a sound (peak above {20 * math.log10(SILENCE_PEAK):.0f} dBFS)",
                   f"silence (peak {db:.1f} dBFS) in {str(p)!r}", "give a file that contains the sound")
    return audio, int(sr), meta


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


def prepare_target(path: str | os.PathLike, data: Any, note: int | str = "auto",
                   say: Callable[[str], None] = print) -> Target:
    """Read and condition a target for a run whose data config is ``data`` (``--note``: ``auto``
    or a MIDI note)."""
    import librosa

    raw, sr, meta = read_audio(path)
    messages: list[str] = []

    def tell(m: str) -> None:
        messages.append(m)
        say(m)

    from proxies.synth import get_synth

    channels = get_synth(data.synth, data.spec or None).channels
    audio = condition_audio(raw, sr, data.sample_rate, data.n_samples, tell, channels)
    if float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise _err("target", "a sound inside the matched window", "silence there", "trim the file to the sound")
    f0 = None
    if note == "auto":
        est, f0, frac = estimate_note(audio, data.sample_rate)
        if est is None:
            midi, source = int(data.note), "fallback"
            tell(f"no stable pitch found (pYIN voiced in {frac:.0%} of frames): playing the run's training note "
                 f"{midi}; pass --note MIDI to choose one")
        else:
            midi, source = est, "estimated"
            tell(f"estimated note {midi} ({librosa.midi_to_note(midi)}, median f0 {f0:.1f} Hz, voiced in "
                 f"{frac:.0%} of frames)")
    else:
        midi, source = int(note), "given"
    shift = int(data.note) - midi
    if abs(shift) > MAX_TRANSPOSE:
        raise _err("note", f"within {MAX_TRANSPOSE} semitones of the run's training note {data.note}", midi,
                   "pass --note closer to it, or train a run on a nearer note")
    if shift:
        model_input = np.stack([librosa.effects.pitch_shift(ch, sr=data.sample_rate, n_steps=float(shift))
                                for ch in audio.astype(np.float64)]).astype(np.float32)
        tell(f"the model hears the target transposed by {shift:+d} semitones to its training note {data.note}; "
             f"the plugin plays note {midi}")
    else:
        model_input = audio
    return Target(audio, model_input, midi, source, f0, messages, meta)


# ------------------------------------------------------------------------------ options
