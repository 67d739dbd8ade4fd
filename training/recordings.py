"""Real recordings to match: single pitched notes from Debian's ``sonic-pi-samples`` (CC0).

The package installs Sonic Pi's sample folder, ``/usr/share/sonic-pi/samples`` (FLAC, 44.1 kHz,
16-bit). Every sample there comes from freesound.org under CC0 1.0 (public domain dedication):
``/usr/share/doc/sonic-pi-samples/copyright`` lists each file's author, freesound source and
``License: CC0``. ``scripts/setup.sh`` installs it.

:data:`RECORDINGS` is the curated table, one :class:`Recording` per sound: a single pitched note
of about 2-4 s (trimmed from the file where ``start_s``/``end_s`` say so), no drums, loops or
chords. The folder holds few real single notes: the acoustic ones are a guitar harmonic, a bell,
two rubbed/hummed glasses and a (processed) piano note; the electric ones are synth basses at
C2. Each entry's numbers were measured (pYIN pitch, onsets, duration; ``tests/test_recordings.py``
checks them again):

* :func:`recordings_dir` -> the samples folder (a clear error with the install command when absent);
* :func:`recording_paths` -> name -> source file (untrimmed);
* :func:`load_recording` -> (audio [C, T] float32, sample rate) of the trimmed note;
* :func:`copy_recordings` -> the trimmed notes as ``<dest>/<name>.wav`` (16-bit PCM), written
  atomically and only when their content changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from proxies.files import atomic_write_bytes

__all__ = ["RECORDINGS", "SAMPLES_DIR", "Recording", "copy_recordings", "load_recording", "recording",
           "recording_paths", "recordings_dir"]

#: where Debian's ``sonic-pi-samples`` puts the samples
SAMPLES_DIR = Path("/usr/share/sonic-pi/samples")
INSTALL_HINT = "run `bash scripts/setup.sh` (or `sudo apt-get install sonic-pi-samples`)"
FADE_IN_S = 0.005  # raised-cosine fade where a trim starts inside the sound
FADE_OUT_S = 0.02  # ... and where it ends inside the sound


@dataclass(frozen=True)
class Recording:
    """One real recording of a single note.

    Attributes:
        name: short name (also the wav name :func:`copy_recordings` writes).
        file: file name inside :data:`SAMPLES_DIR`.
        instrument: what plays the note.
        kind: ``acoustic`` (a recorded physical instrument) or ``electric`` (synthesizer).
        licence: the file's licence as ``debian/copyright`` states it.
        source: the freesound page ``debian/copyright`` names.
        midi: the note (MIDI number) pYIN finds in the trimmed sound.
        start_s, end_s: the trim (seconds into the file; ``end_s`` None: to the end of the file).
        auto_note: True when ``training.targets.estimate_note`` (``training.match --note auto``)
            finds ``midi`` at 16 kHz; False: pass ``--note midi`` when matching it.
        notes: how the entry was chosen and trimmed.
    """

    name: str
    file: str
    instrument: str
    kind: Literal["acoustic", "electric"]
    licence: str
    source: str
    midi: int
    start_s: float = 0.0
    end_s: float | None = None
    auto_note: bool = True
    notes: str = ""


RECORDINGS: tuple[Recording, ...] = (
    Recording("guitar_harmonic", "guit_harmonics.flac", "acoustic guitar, natural harmonic", "acoustic", "CC0",
              "http://freesound.org/people/BStateham/sounds/141524/", midi=71, start_s=1.21,
              notes="the file plucks six harmonics 0.2 s apart; trimmed to the last one (B4), which rings 2.3 s "
                    "down to -55 dB"),
    Recording("bell", "perc_bell.flac", "struck bell", "acoustic", "CC0",
              "http://freesound.org/people/AlaskaRobotics/sounds/221515/", midi=87, end_s=3.0,
              notes="inharmonic: pYIN's pitch is D#6/A6 for the first 1.1 s, then D#6 (87); strongest partials "
                    "1309/1343 Hz (beating). Trimmed to 3 s of its 6.7 s decay (-36 dB at 3 s)"),
    Recording("glass_rub", "ambi_glass_rub.flac", "rubbed wine glass", "acoustic", "CC0",
              "http://freesound.org/people/ani_music/sounds/198403/", midi=78,
              notes="whole file, 3.15 s: a steady F#5 whose level pulses with the rubbing (about 10 dB)"),
    Recording("glass_hum", "ambi_glass_hum.flac", "humming glass", "acoustic", "CC0",
              "http://freesound.org/people/kaligari/sounds/35391/", midi=45, end_s=4.0,
              notes="the file swells in over 1.5 s and holds A2 until 4.5 s, then changes to A1: trimmed to the "
                    "first 4 s (the A2 note)"),
    Recording("piano_low", "ambi_piano.flac", "piano, low note (processed, ambient)", "acoustic", "CC0",
              "http://freesound.org/people/RutgerMuller/sounds/51245/", midi=34, start_s=0.73, end_s=2.10,
              auto_note=False,
              notes="the file is a three-note low phrase; trimmed to its last note, A#1 (58.2 Hz, with a weaker "
                    "A#0), 1.25 s held then cut (falls 36 dB in 50 ms at 1.98 s in the file). Near-sinusoidal "
                    "timbre; pYIN voicing probability stays under 0.5, so give --note 34"),
    Recording("bass_woodsy", "bass_woodsy_c.flac", "synth bass ('woodsy')", "electric", "CC0",
              "http://freesound.org/people/ani_music/sounds/165322/", midi=36,
              notes="whole file, 3.25 s: C2 held 2.4 s, then released (falls to a -16 dB shelf, which the file cuts at "
                    "3.2 s)"),
    Recording("bass_thick", "bass_thick_c.flac", "synth bass ('thick', slow filter motion)", "electric", "CC0",
              "http://freesound.org/people/ani_music/sounds/165314/", midi=36, end_s=3.0,
              notes="C2 held 3.95 s with a slow 6 dB level/filter motion; trimmed to 3 s"),
    Recording("bass_voxy", "bass_voxy_c.flac", "synth bass ('voxy', vowel-like filter)", "electric", "CC0",
              "http://freesound.org/people/ani_music/sounds/165325/", midi=36, end_s=3.0,
              notes="C2 held 6.2 s with a 3.2 s filter cycle (level -11..0 dB); trimmed to the first 3 s"),
    Recording("bass_trance", "bass_trance_c.flac", "synth bass ('trance', rhythmic filter)", "electric", "CC0",
              "http://freesound.org/people/ani_music/sounds/165329/", midi=36,
              notes="whole file, 3.6 s: one held C2 whose level dips up to 10 dB with a rhythmic filter"),
)


def recording(name: str) -> Recording:
    """The table entry called ``name``; a clear error for unknown names."""
    for r in RECORDINGS:
        if r.name == name:
            return r
    raise KeyError(f"no recording called {name!r}; expected one of {[r.name for r in RECORDINGS]}")


def recordings_dir() -> Path:
    """The samples folder, checked to hold every file of :data:`RECORDINGS`.

    Raises FileNotFoundError naming the install command when the package is not installed."""
    folder = Path(SAMPLES_DIR)
    missing = [r.file for r in RECORDINGS if not (folder / r.file).is_file()]
    if missing:
        what = (f"the folder {folder} does not exist" if not folder.is_dir() else
                f"{len(missing)} sample(s) are missing from {folder}: {missing[:3]}")
        raise FileNotFoundError(f"the real recordings come from Debian's sonic-pi-samples package, but {what}; "
                                f"{INSTALL_HINT}")
    return folder


def recording_paths() -> dict[str, Path]:
    """name -> the source file (FLAC, the whole file: see :func:`load_recording` for the trimmed note)."""
    folder = recordings_dir()
    return {r.name: folder / r.file for r in RECORDINGS}


def load_recording(name: str) -> tuple[np.ndarray, int]:
    """(audio [channels, samples] float32 in [-1, 1], sample rate in Hz) of the trimmed note:
    the table's ``start_s``..``end_s`` of the file, with short fades where a trim cuts into the sound."""
    import soundfile as sf

    r = recording(name)
    path = recordings_dir() / r.file
    data, sample_rate = sf.read(path, dtype="float32", always_2d=True)  # [T, C]
    a = int(round(r.start_s * sample_rate))
    b = len(data) if r.end_s is None else min(len(data), int(round(r.end_s * sample_rate)))
    audio = np.ascontiguousarray(data[a:b].T)
    if a > 0:
        audio[:, :int(FADE_IN_S * sample_rate)] *= _fade(int(FADE_IN_S * sample_rate))
    if b < len(data):
        n = int(FADE_OUT_S * sample_rate)
        audio[:, -n:] *= _fade(n)[::-1]
    return audio, int(sample_rate)


def _fade(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)


def copy_recordings(dest_dir: str | os.PathLike, names: list[str] | None = None) -> list[Path]:
    """Write the trimmed notes as ``<dest_dir>/<name>.wav`` (16-bit PCM, the file's sample rate
    and channels); returns their paths in table order.

    Each file is written atomically, and only when its bytes would change: a second call
    rewrites nothing."""
    from training.report import wav_bytes

    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for r in RECORDINGS if names is None else [recording(n) for n in names]:
        audio, sample_rate = load_recording(r.name)
        data = wav_bytes(audio, sample_rate)
        path = dest / f"{r.name}.wav"
        try:
            same = path.read_bytes() == data
        except OSError:
            same = False
        if not same:
            atomic_write_bytes(path, data)
        out.append(path)
    return out
