"""Rendering candidates at each target's note through the real engine, and scoring them.

Refinement through the proxy lives in :mod:`training.refine`, CMA-ES in :mod:`training.cma`.

* :class:`NoteRenderer`: the real engine through ``training.data.EngineRenderer``, each preset
  at its own MIDI note, with restarts after failures.

* :func:`score_mss`, :func:`rms_db`: the evaluation's distance of real-engine renders to their
  targets (:func:`training.evaluate_core.audio_metrics`), with a loudness floor.

Value spaces: everything here is *normalized* values ``[B, n_params]`` in [0, 1].
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from training.config import DataConfig
from training.data import EngineRenderer

#: ``render(normalized [N, n_params], rows [N]) -> (audio [N, C, T] float32, ok [N] bool)``: the
#: real engine playing the note of target ``rows[i]``.
RenderFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

# ------------------------------------------------------------------------------ plugin at notes
class NoteRenderer(EngineRenderer):
    """:class:`training.data.EngineRenderer` that plays a given MIDI note per preset.

    ``render_at(normalized [N, n_params], notes [N]) -> (audio [N, C, T], ok [N])``, one engine
    batch with a note per preset. Presets that failed (after the pool's
    own retry in a fresh worker) or came back non-finite are tried again in a fresh pool (see
    :meth:`render_at`). Velocity, hold and duration come from the data config. :attr:`failures`
    keeps the reason of every failed attempt, :attr:`restarts` counts pool restarts.
    """

    def __init__(self, cfg: DataConfig, workers: int | None = None, log: Callable[[str], None] | None = None):
        super().__init__(cfg, workers)
        self._base = cfg
        self._log = log
        self.failures: list[str] = []
        self.restarts = 0
        self.culprits: list[np.ndarray] = []  # presets that failed alone in a fresh pool

    def __enter__(self) -> "NoteRenderer":
        super().__enter__()
        engine = self._engine
        render_batch = engine.render

        def recording(*args: Any, **kwargs: Any):
            audio, failures = render_batch(*args, **kwargs)
            reasons = [str(getattr(f, "reason", f)) for f in failures or ()]
            self.failures.extend(reasons)
            if reasons and self._log is not None:
                self._log(f"[render] {len(reasons)} of {len(audio)} {self.synth.name} render(s) failed: {reasons[0]}")
            return audio, failures

        self._engine = engine._replace(render=recording)  # failure reasons, for the reports
        return self

    def render_at(self, normalized: np.ndarray, notes: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        normalized = np.asarray(normalized, dtype=np.float64)
        notes = np.broadcast_to(np.asarray(notes, dtype=np.int64), (len(normalized),))
        audio = np.zeros((len(normalized), self.channels, self._base.n_samples), dtype=np.float32)
        ok = np.zeros(len(normalized), dtype=bool)
        self._render_rows(normalized, notes, np.arange(len(normalized)), audio, ok)
        if not ok.all():
            # A failed or non-finite render may have left a worker's plugin in a state where every
            # later render comes back NaN: start fresh workers and try the bad rows again, then,
            # if a few are still bad, once more one at a time (a preset that itself makes NaN
            # cannot spoil the others' renders).
            self._restart(f"{int((~ok).sum())} of {len(ok)} render(s) failed or were not finite")
            self._render_rows(normalized, notes, np.flatnonzero(~ok), audio, ok)
            if not ok.all():
                self._restart(f"{int((~ok).sum())} render(s) still bad")
                if (~ok).sum() <= 8:
                    for i in np.flatnonzero(~ok):
                        self._render_rows(normalized, notes, np.array([i]), audio, ok)
                        if not ok[i]:
                            self.culprits.append(normalized[i].copy())
                            self._restart(None)
        return audio, ok

    def _render_rows(self, normalized: np.ndarray, notes: np.ndarray, rows: np.ndarray, audio: np.ndarray,
                     ok: np.ndarray) -> None:
        if len(rows):
            audio[rows], ok[rows] = self.render(normalized[rows], notes[rows])

    def _restart(self, why: str | None) -> None:
        """Replace the worker pool by a fresh one."""
        if why is not None and self._log is not None:
            self._log(f"[render] {why}: restarting the {self.synth.name} engine")
        self.restarts += 1
        self.__exit__(None, None, None)
        self.__enter__()


def rms_db(audio: np.ndarray) -> np.ndarray:
    """RMS level in dBFS [N] of audio [N, C, T] (all channels and samples; -inf for silence)."""
    a = np.asarray(audio, dtype=np.float64)
    ms = np.mean(np.square(a.reshape(len(a), -1)), axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(ms)


def score_mss(audio: np.ndarray, target: np.ndarray, ok: np.ndarray, sample_rate: int,
              min_level_db: np.ndarray | float | None = None) -> np.ndarray:
    """Multi-resolution STFT distance [N] of plugin renders against their targets (the ``mss`` of
    ``training.evaluate_core.audio_metrics``); failed or non-finite renders score ``inf``.

    ``min_level_db`` (scalar or [N], dBFS): renders whose RMS level (:func:`rms_db`) is below it
    also score ``inf``. The distance alone prefers silence to a wrong sound for short targets
    padded with silence (measured: a 0.14 s bell, where 30 refinement steps reached a silent
    preset); a search for a preset the user can hear must not take that way out.
    """
    from training.evaluate_core import audio_metrics

    d = np.asarray(audio_metrics(audio, target, sample_rate)["mss"], dtype=np.float64)
    good = np.asarray(ok) & np.isfinite(d)
    if min_level_db is not None:
        good &= rms_db(audio) >= np.asarray(min_level_db, dtype=np.float64)
    return np.where(good, d, np.inf)

