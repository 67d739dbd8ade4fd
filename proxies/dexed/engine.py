"""The real Dexed engine: ``dexed-py`` 0.3.0 rendered in-process on a thread pool.

What dexed-py does (``shared/dexed/README.md`` §2.1, §10, checked here in
``tests/test_dexed_engine.py``):

* ``dexed._dexed.DexedSynth(sample_rate, algorithm)``: ``load_sysex(bytes)`` takes at least 156
  bytes (the 155 VCED bytes and Dexed's operator on/off byte, which the engine ignores; we send
  0x3F) and copies them raw: out-of-range bytes are **not** checked, so every voice goes through
  :func:`proxies.dexed.spec.vced_from_normalized` first. ``render(note, velocity,
  note_duration, render_duration)`` plays one note from sample 0 and returns float32 ``[T]``.
* Every render builds a fresh voice and LFO (phases 0, the S&H generator seeded with 0): the
  same voice renders bit-identically whatever was rendered before, on any instance, in any
  thread. :attr:`Engine.reproducible` is therefore True for every voice.
* The GIL is released while rendering, one lock per instance: each of the ``workers`` threads
  renders on its own ``DexedSynth``.
* **One sample rate per process.** The frequency, envelope, pitch-EG and LFO tables are
  process-global, rebuilt when a render runs at a new rate, and two renders at *different*
  rates at the same time raise ``RuntimeError`` inside dexed-py. :func:`open_engine` therefore
  refuses a second rate while an engine at another rate is open (close it first, or use
  another process); engines at the same rate may coexist.
* **Note-off.** dexed-py applies ``keyup`` at the start of the 64-sample block
  ``ceil(round(float32(note_duration) sr) / 64)``. This engine releases every note at
  :func:`proxies.synth.note_off_sample` ``(hold_s, sr, NOTES)`` samples after its note-on
  (``floor(hold_s sr)`` rounded **up** to a multiple of 64): it passes dexed-py a duration
  16 samples before that block boundary, so the engine's own rounding lands on it exactly.
  (Given the raw ``hold_s``, dexed-py would differ from this only where ``hold_s sr`` lies in
  ``[64 k + 0.5, 64 k + 1)``: it rounds that to ``64 k + 1`` and releases one block later. The
  test checks both rules against the engine.)
* **Length.** Output has exactly :func:`proxies.synth.render_samples` ``(duration_s, sr)``
  samples (dexed-py is asked for 32 more and trimmed).
* **Several notes.** dexed-py plays one note per render. Several notes are rendered as
  independent voices (each with its own LFO, as dexed-py retriggers it per note), each placed
  at sample ``floor(start_s sr)``, and summed (exact: every sample is a multiple of 2^-12).

Output scale is dexed-py's: ``int32 mix / 2^25``, no clipping; a full-level sine carrier peaks
at ~0.9993 and ROM voices reach ~3.9 at velocity 100 (the Dexed plugin plays 1/8 of this).

Speed through this engine (2-core VM shared with other jobs, load ~2; note 60 held 1.5 s in a
2 s render; the 128 DX7 ROM voices and 128 voices of the prior, best of 3):

========  =================================  ============
rate      1 thread                           2 threads
========  =================================  ============
16 kHz    0.9-1.0 ms/voice, 2000-2300x RT    2300-2600x
44.1 kHz  2.5-2.8 ms/voice, 720-810x RT      900-1500x
========  =================================  ============
"""

from __future__ import annotations

import queue
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from proxies.dexed.spec import DEXED, VCED_SIZE, vced_from_normalized
from proxies.notes import Note, RenderFailure, check_duration, check_sample_rate, notes_per_row
from proxies.synth import Engine, NoteConvention, note_off_sample, render_samples

__all__ = ["BLOCK", "NOTES", "OP_SWITCH_BYTE", "SampleRateConflictError", "open_engine", "open_sample_rates",
           "render_voice", "voice_bytes"]

#: dexed-py's control block (samples): note-offs are quantised up to it.
BLOCK = 64
#: The note convention of this engine (what ``proxies.dexed.synth.SYNTH.notes`` says).
NOTES = NoteConvention(note_off_quantum=BLOCK, note_off_rounding="ceil")
#: Dexed's operator on/off mask, byte 156 of ``load_sysex`` (ignored by the engine; all on).
OP_SWITCH_BYTE = 0x3F
#: Render attempts per voice (the first and one retry on a fresh instance).
ATTEMPTS = 2

_INSTALL = "install it with `pip install dexed-py==0.3.0` (in the project's virtualenv)"
_RATES_LOCK = threading.Lock()
_OPEN_RATES: dict[int, int] = {}  # sample rate -> engines open at it


class SampleRateConflictError(RuntimeError):
    """An engine was opened at a sample rate other than that of an engine still open in this process."""


def open_sample_rates() -> dict[int, int]:
    """``{sample rate: number of open dexed engines}`` in this process."""
    with _RATES_LOCK:
        return {r: c for r, c in _OPEN_RATES.items() if c > 0}


def _import_dexed():
    try:
        import dexed  # noqa: PLC0415  (the extension; only where audio is rendered)
    except ImportError as e:
        raise ImportError(f"the Dexed engine needs the dexed-py package ({e}); {_INSTALL}") from None
    version = getattr(dexed, "__version__", "?")
    if not str(version).startswith("0.3."):
        raise ImportError(f"dexed-py {version} is installed, but this engine was verified against 0.3.0 "
                          f"(shared/dexed/README.md); {_INSTALL}")
    return dexed


def voice_bytes(vced: Sequence[int] | np.ndarray) -> bytes:
    """The 156 bytes dexed-py's ``load_sysex`` takes: 155 VCED values and the operator mask 0x3F.

    ``vced``: int ``[155]`` inside the native ranges (see :mod:`proxies.dexed.spec`).
    """
    v = np.asarray(vced)
    if v.shape != (VCED_SIZE,):
        raise ValueError(f"expected {VCED_SIZE} VCED values, got shape {v.shape}")
    lo, hi = DEXED.minimum, DEXED.maximum
    if np.any(v < lo) or np.any(v > hi):
        i = int(np.flatnonzero((v < lo) | (v > hi))[0])
        raise ValueError(f"{DEXED.params[i].name} (VCED byte {i}) is {int(v[i])}, outside {lo[i]:g}..{hi[i]:g}; "
                         "dexed-py does not check voice bytes (a pitch-EG value above 99 reads past a table)")
    return bytes(v.astype(np.uint8).tobytes()) + bytes([OP_SWITCH_BYTE])


def render_voice(synth: Any, voice: bytes, notes: Sequence[Note], sample_rate: int, n_samples: int) -> np.ndarray:
    """Render ``notes`` with one voice on one ``dexed._dexed.DexedSynth`` (the module docstring's
    conventions). Returns float32 ``[n_samples]``."""
    synth.load_sysex(voice)
    out = np.zeros(n_samples, dtype=np.float32)
    for note in notes:
        start = note_off_sample(note.start_s, sample_rate)  # floor(start_s * sr)
        length = n_samples - start
        if length <= 0:
            continue
        off = note_off_sample(note.hold_s, sample_rate, NOTES)  # a multiple of 64, from the note-on
        # dexed-py rounds round(float32(d) * sr) up to a block: aim 16 samples before the boundary
        note_duration = (off - 16) / sample_rate if off > 0 else 0.0
        y = synth.render(int(note.pitch), int(note.velocity), note_duration, (length + 32) / sample_rate)
        if y.shape[0] < length:
            raise RuntimeError(f"dexed-py returned {y.shape[0]} samples, {length} were asked for")
        if len(notes) == 1 and start == 0:
            out = np.ascontiguousarray(y[:length], dtype=np.float32)
        else:
            out[start:] += y[:length]
    return out


class _DexedEngine:
    """A pool of ``workers`` threads, each rendering on its own ``DexedSynth`` (see the module)."""

    def __init__(self, sample_rate: int, workers: int, normalize_feedback: bool):
        self._dexed = _import_dexed()
        self.sample_rate = sample_rate
        self.workers = workers
        self.normalize_feedback = bool(normalize_feedback)
        self._synths: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(workers):
            self._synths.put(self._new_synth())
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dexed")
        self._state = {"closed": False}  # shared with the finalizer
        self._lock = threading.Lock()

    def _new_synth(self) -> Any:
        s = self._dexed._dexed.DexedSynth(float(self.sample_rate), 0)
        s.normalize_feedback = self.normalize_feedback
        return s

    def _render_one(self, i: int, voice: bytes, notes: tuple[Note, ...], total: int):
        """``(i, audio [T] | None, reasons)``: up to :data:`ATTEMPTS` tries, a fresh synth after a failure."""
        reasons: list[str] = []
        for _ in range(ATTEMPTS):
            synth = self._synths.get()
            try:
                y = render_voice(synth, voice, notes, self.sample_rate, total)
                if not np.all(np.isfinite(y)):
                    raise RuntimeError("non-finite samples in the output")
                self._synths.put(synth)
                return i, y, reasons
            except Exception as e:  # noqa: BLE001  (reported per voice, never the batch)
                reasons.append(f"{type(e).__name__}: {e}")
                try:
                    synth = self._new_synth()
                except Exception:  # noqa: BLE001  (keep the old instance: a worker never loses its synth)
                    pass
                self._synths.put(synth)
        return i, None, reasons

    def render(self, normalized: Any, notes: Any = (Note(),), duration_s: float = 1.0,
               progress: bool = False) -> tuple[np.ndarray, list[RenderFailure]]:
        """Render normalized voices ``[B, 155]``: audio float32 ``[B, 1, T]`` (T =
        ``render_samples(duration_s, sample_rate)``) and the failures (NaN rows), sorted by index."""
        if self._state["closed"]:
            raise RuntimeError("this Dexed engine is closed; open a new one with open_engine(sample_rate)")
        duration_s = check_duration(duration_s)
        n = np.asarray(normalized, dtype=np.float64)
        if n.ndim != 2 or n.shape[1] != VCED_SIZE:
            raise ValueError(f"normalized: expected voices of shape [B, {VCED_SIZE}], got shape {n.shape}")
        vced = vced_from_normalized(n, source="normalized")
        rows = notes_per_row(notes, n.shape[0], duration_s)
        total = render_samples(duration_s, self.sample_rate)
        audio = np.full((n.shape[0], 1, total), np.nan, dtype=np.float32)
        failures: list[RenderFailure] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm  # noqa: PLC0415

            bar = tqdm(total=n.shape[0], desc="render dexed", unit="voice")
        try:
            futures = [self._pool.submit(self._render_one, i, voice_bytes(vced[i]), rows[i], total)
                       for i in range(n.shape[0])]
            for f in futures:
                i, y, reasons = f.result()
                if y is None:
                    failures.append(RenderFailure(i, reasons[-1], len(reasons), tuple(reasons)))
                else:
                    audio[i, 0] = y
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return audio, failures

    def close(self) -> None:
        with self._lock:
            if self._state["closed"]:
                return
            self._state["closed"] = True
        self._pool.shutdown(wait=True)
        _release_rate(self.sample_rate)


def _release_rate(sample_rate: int) -> None:
    with _RATES_LOCK:
        _OPEN_RATES[sample_rate] = max(0, _OPEN_RATES.get(sample_rate, 0) - 1)


def _all_reproducible(normalized: Any) -> np.ndarray:
    n = np.asarray(normalized)
    return np.ones(n.shape[:-1], dtype=bool)


def open_engine(sample_rate: int, workers: int = 2, normalize_feedback: bool = False, **options: Any) -> Engine:
    """Open the in-process Dexed engine as a :class:`proxies.synth.Engine` (kind ``"inprocess"``).

    Args:
        sample_rate: Hz, an integer in 8000..192000. One rate per process: an engine at another
            rate must be closed first (:class:`SampleRateConflictError`).
        workers: render threads (one ``DexedSynth`` each), >= 1.
        normalize_feedback: dexed-py's switch; False (the default) keeps Dexed's authentic 4x
            weaker feedback in algorithms 4, 6 and 32.
        options: none others are known (an error names them).

    Returns:
        ``Engine(render, reproducible, close, channels=1, sample_rate, kind="inprocess")`` where
        ``render(normalized [B, 155], notes, duration_s, progress=False) -> (audio [B, 1, T],
        failures)``.
    """
    if options:
        raise TypeError(f"unknown Dexed engine option(s) {sorted(options)}; known: workers, normalize_feedback")
    sr = check_sample_rate(sample_rate)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or int(workers) < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    with _RATES_LOCK:
        others = {r: c for r, c in _OPEN_RATES.items() if c > 0 and r != sr}
        if others:
            raise SampleRateConflictError(
                f"a Dexed engine at {', '.join(f'{r} Hz' for r in others)} is still open in this process, and "
                f"dexed-py cannot render at two sample rates at once (its frequency, envelope and LFO tables are "
                f"process-wide); close that engine (engine.close()) before opening one at {sr} Hz, or render "
                "the other rate in another process")
        _OPEN_RATES[sr] = _OPEN_RATES.get(sr, 0) + 1
    try:
        impl = _DexedEngine(sr, int(workers), normalize_feedback)
    except BaseException:
        _release_rate(sr)
        raise
    weakref.finalize(impl, _finalize, impl._pool, sr, impl._state)
    return Engine(render=impl.render, reproducible=_all_reproducible, close=impl.close, channels=1,
                  sample_rate=sr, kind="inprocess")


def _finalize(pool: ThreadPoolExecutor, sample_rate: int, state: dict) -> None:
    """An engine dropped without ``close()``: free its threads and its claim on the sample rate."""
    if not state["closed"]:
        state["closed"] = True
        pool.shutdown(wait=False)
        _release_rate(sample_rate)
