"""Notes, render lengths and render failures: what every engine (plugin pool, in-process
engine, proxy) agrees on.

Render lengths and note-off samples are derived in :mod:`proxies.synth` (``render_samples``,
``note_off_sample``); this module checks user-facing values (notes, sample rates, durations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from proxies.synth import render_samples

__all__ = ["MAX_SAMPLE_RATE", "MIN_SAMPLE_RATE", "Note", "RenderFailure", "check_duration", "check_notes",
           "check_sample_rate", "n_samples"]

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000  # amsynth's Freeverb asserts rate <= 192000 (aborts the process above)


@dataclass(frozen=True)
class Note:
    """One MIDI note.

    Attributes:
        pitch: MIDI note number, 0..127 (60 = middle C, 261.6 Hz).
        velocity: MIDI velocity, 1..127 (0 would be a note-off).
        start_s: note-on time (s) from the start of the render, >= 0.
        hold_s: time (s) until the note-off, > 0 (DawDreamer refuses empty notes). Notes still
            held when the render ends are cut (DawDreamer sends All-Notes-Off after every render).
    """

    pitch: int = 60
    velocity: int = 100
    start_s: float = 0.0
    hold_s: float = 1.0

    def __post_init__(self) -> None:
        for name, lo, hi in (("pitch", 0, 127), ("velocity", 1, 127)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ValueError(f"Note.{name} must be an integer in {lo}..{hi}, got {v!r}")
            object.__setattr__(self, name, int(v))
        for name in ("start_s", "hold_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"Note.{name} must be a number of seconds, got {v!r}")
            if not math.isfinite(v) or v < 0 or (name == "hold_s" and v == 0):
                rule = "> 0" if name == "hold_s" else ">= 0"
                raise ValueError(f"Note.{name} must be a finite time {rule} s, got {v!r}")
            object.__setattr__(self, name, float(v))


def check_notes(notes: Note | Iterable[Note], duration_s: float) -> tuple[Note, ...]:
    out = (notes,) if isinstance(notes, Note) else tuple(notes)
    if not out:
        raise ValueError("notes is empty; give at least one Note (e.g. notes=(Note(60),))")
    for k, n in enumerate(out):
        if not isinstance(n, Note):
            raise ValueError(f"notes[{k}] is a {type(n).__name__}, expected proxies.notes.Note")
        if n.start_s >= duration_s:
            raise ValueError(
                f"notes[{k}] starts at {n.start_s} s, at or after the end of the render "
                f"(duration_s={duration_s}); start it earlier or render longer"
            )
    return out


def check_sample_rate(sample_rate: Any) -> int:
    """The sample rate as an int; a clear error unless it is an integer in 8000..192000 Hz."""
    ok = isinstance(sample_rate, (int, np.integer)) and not isinstance(sample_rate, bool)
    if isinstance(sample_rate, (float, np.floating)) and float(sample_rate).is_integer():
        ok = True
    if not ok or not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"unsupported sample rate {sample_rate!r}: expected an integer number of Hz in "
            f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} (e.g. 16000, 44100, 48000)"
        )
    return int(sample_rate)


def check_duration(duration_s: Any) -> float:
    if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float, np.integer, np.floating)):
        raise ValueError(f"duration_s must be a number of seconds, got {duration_s!r}")
    d = float(duration_s)
    if not math.isfinite(d) or d <= 0 or d > 600:
        raise ValueError(f"duration_s must be in (0, 600] s, got {duration_s!r}")
    return d


n_samples = render_samples  # the one derivation lives in proxies.synth



@dataclass(frozen=True)
class RenderFailure:
    """A preset the pool could not render (its audio row is NaN).

    Attributes:
        index: row in the batch.
        reason: what happened on the last attempt (crash signal, timeout, exception).
        attempts: how many workers tried it (2: the first try and one retry in a fresh worker).
        reasons: the reason of every attempt, in order.
    """

    index: int
    reason: str
    attempts: int
    reasons: tuple[str, ...] = ()



def notes_per_row(notes: Any, batch: int, duration_s: float) -> list[tuple[Note, ...]]:
    """The notes of each of ``batch`` presets: one Note or tuple of Notes shared by every preset,
    or a sequence of ``batch`` such tuples (one per preset). Each is checked against ``duration_s``."""
    if isinstance(notes, Note) or (isinstance(notes, (tuple, list)) and notes and all(isinstance(n, Note) for n in notes)):
        shared = check_notes(notes, duration_s)
        return [shared] * batch
    rows = list(notes)
    if len(rows) != batch:
        raise ValueError(f"notes: expected one Note tuple shared by all presets or {batch} tuples (one per "
                         f"preset), got {len(rows)}")
    return [check_notes(r, duration_s) for r in rows]
