"""The synth's human presets rendered at one note, cached: the gallery for matching without training.

:func:`corpus_renders` renders every preset of the synth's corpus (``Synth.presets.corpus()``;
amsynth: its 3482 factory presets) through the **real engine** at one note, and caches the audio
in ``<cache_dir>/corpus-<synth>-<hash12>.npz``, the hash taken over everything that determines it
(the spec, the corpus, note, velocity, sample rate, duration, hold). Rendering reuses
:mod:`training.data`: :class:`~training.data.EngineRenderer` (engine, failures, NaN rows), its
chunked renderer and its shard files. It is resumable: every ``PART_SIZE`` presets are written
atomically to ``corpus-<synth>-<hash12>.parts/part-NNNN.npz`` as they finish, so a killed run keeps
them; the parts are merged into the final file (atomically) and removed. A missing, partial or
corrupt file is rendered again. Presets that fail to render are dropped and named. The last
corpora loaded are also kept in memory (:data:`KEEP_IN_MEMORY`), so matching a folder of sounds
reads each note's file once; one whose file changed on disk is read again.

:func:`best_in_corpus_by_mss` searches it (the baseline of matching a target without a trained
model): the multi-resolution STFT distance (``mss`` of :func:`training.evaluate_core.audio_metrics`)
of every render to the target: brute force.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from proxies.files import atomic_savez
from training.config import DataConfig
from training.data import (EngineRenderer, _load_split, _progress, _render_chunks, _shard_rows, _shard_valid,
                           data_fingerprint, dataset_dir, factory_presets, synth_of)

__all__ = ["CorpusRenders", "best_in_corpus_by_mss", "corpus_renders"]

FORMAT_VERSION = 1
PART_SIZE = 512  # presets per resumable part file
CHUNK = 64  # presets per engine call
AUDIO_DTYPE = "float16"
#: corpora kept in memory (the most recently used; amsynth's is ~220 MB at 16 kHz)
KEEP_IN_MEMORY = 2


class CorpusRenders(NamedTuple):
    """The corpus rendered at one note (failed presets dropped).

    Attributes:
        names: preset names [N] (row order).
        normalized: presets [N, n_params] float64.
        audio: real-engine renders [N, channels, samples] float16.
        note: the MIDI note played.
        path: the cache file.
        index: each row's position in the synth's corpus [N] int64.
        failed: names of the presets that failed to render (dropped).
        sample_rate: Hz of ``audio``.
    """

    names: list[str]
    normalized: np.ndarray
    audio: np.ndarray
    note: int
    path: Path
    index: np.ndarray
    failed: list[str]
    sample_rate: int


def _config(synth_name: str, note: int, velocity: int, sample_rate: int, duration_s: float, hold_s: float,
            cache_dir: str | Path, workers: int) -> DataConfig:
    cfg = DataConfig(synth=synth_name, sample_rate=int(sample_rate), duration_s=float(duration_s), note=int(note),
                     velocity=int(velocity), hold_s=float(hold_s), workers=int(workers), audio_dtype=AUDIO_DTYPE,
                     cache_dir=str(cache_dir))
    cfg.validate()  # the data config's checks and messages (note, velocity, rate, hold <= duration, ...)
    return cfg


def _fingerprint(cfg: DataConfig, names: list[str], normalized: np.ndarray) -> dict[str, Any]:
    h = hashlib.sha256("\n".join(names).encode("utf-8"))
    h.update(np.ascontiguousarray(normalized, dtype=np.float64).tobytes())
    return {
        "format_version": FORMAT_VERSION,
        "synth": cfg.synth,
        "spec_sha256": data_fingerprint(cfg, synth_of(cfg).spec, None)["spec_sha256"],
        "corpus_sha256": h.hexdigest(),
        "n_presets": len(names),
        "note": cfg.note,
        "velocity": cfg.velocity,
        "sample_rate": cfg.sample_rate,
        "duration_s": cfg.duration_s,
        "hold_s": cfg.hold_s,
        "audio_dtype": AUDIO_DTYPE,
    }


def corpus_renders(synth_name: str, note: int, velocity: int, sample_rate: int, duration_s: float, hold_s: float,
                   cache_dir: str | Path = "data", workers: int = 2, progress: bool = True,
                   log: Callable[[str], None] = print, limit: int | None = None) -> CorpusRenders:
    """The synth's corpus rendered through its real engine at ``note`` (held ``hold_s`` of a
    ``duration_s`` render), from the cache when there, else rendered (resuming finished parts).

    ``limit``: only the first ``limit`` presets of the corpus (a separate cache file). A corpus
    this process loaded or rendered is returned from memory while its file is unchanged."""
    cfg = _config(synth_name, note, velocity, sample_rate, duration_s, hold_s, cache_dir, workers)
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit: expected None (every preset) or an integer >= 1, got {limit!r}")
    key = (cfg.synth, cfg.note, cfg.velocity, cfg.sample_rate, cfg.duration_s, cfg.hold_s,
           os.path.abspath(cache_dir), None if limit is None else int(limit))
    kept = _recall(key)
    if kept is not None:
        return kept
    synth = synth_of(cfg)
    names, normalized = factory_presets(synth)
    if limit is not None:
        names, normalized = names[:int(limit)], normalized[:int(limit)]
    fingerprint = _fingerprint(cfg, names, normalized)
    stem = "corpus-" + dataset_dir(cfg, fingerprint).name
    root = Path(cache_dir)
    path = root / f"{stem}.npz"
    parts_dir = root / f"{stem}.parts"
    shape = (synth.channels, cfg.n_samples)

    loaded = _load_final(path, fingerprint, names, normalized, shape, int(sample_rate))
    if loaded is not None:
        return _remember(key, loaded)
    if path.exists():
        log(f"[corpus] {path} is unreadable or stale: rendering it again")
        path.unlink()

    parts_dir.mkdir(parents=True, exist_ok=True)
    for tmp in [*parts_dir.glob(".*.tmp"), *root.glob(f".{stem}.npz.*.tmp")]:  # leftovers of a killed writer
        tmp.unlink(missing_ok=True)
    n = len(names)
    plan = _shard_rows(n, PART_SIZE)
    pitch = np.full(n, cfg.note, np.int64)
    velocity_row = np.full(n, cfg.velocity, np.int64)
    todo = [k for k, rows in enumerate(plan)
            if not _shard_valid(parts_dir / f"part-{k:04d}.npz", normalized[rows], pitch[rows], velocity_row[rows],
                                rows, cfg, synth.channels)]
    if todo:
        n_render = sum(len(plan[k]) for k in todo)
        log(f"[corpus] rendering {n_render} of {n} {synth.name} presets at note {cfg.note} through the real engine "
            f"({cfg.workers} workers) into {path}")
        t0 = time.perf_counter()
        with EngineRenderer(cfg) as renderer, _progress(n_render, progress) as bar:
            for k in todo:
                rows = plan[k]
                audio, ok = _render_chunks(renderer, normalized[rows], pitch[rows], velocity_row[rows], bar, CHUNK)
                kept = rows[ok]
                atomic_savez(parts_dir / f"part-{k:04d}.npz", audio=audio[ok].astype(AUDIO_DTYPE),
                             normalized=normalized[kept],
                             internal=np.asarray(synth.spec.normalized_to_internal(normalized[kept]), np.float32),
                             index=kept.astype(np.int64), failed=rows[~ok].astype(np.int64),
                             pitch=pitch[kept], velocity=velocity_row[kept])
        dt = time.perf_counter() - t0
        log(f"[corpus] rendered {n_render} presets in {dt:.1f} s ({n_render / max(dt, 1e-9):.1f} renders/s)")

    split = _load_split(parts_dir, "part", range(len(plan)))
    failed_rows = np.concatenate([_failed_rows(parts_dir / f"part-{k:04d}.npz") for k in range(len(plan))])
    failed = [names[i] for i in failed_rows.tolist()]
    if failed:
        log(f"[corpus] {len(failed)} preset(s) failed to render and are dropped: {failed[:10]}"
            f"{' ...' if len(failed) > 10 else ''}")
    kept_names = [names[i] for i in split.index.tolist()]
    atomic_savez(path, audio=split.audio, normalized=split.normalized, index=split.index,
                 names=np.array(kept_names, dtype=str), failed=np.array(failed, dtype=str),
                 fingerprint=np.array(json.dumps(fingerprint, sort_keys=True)))
    shutil.rmtree(parts_dir, ignore_errors=True)
    return _remember(key, CorpusRenders(kept_names, split.normalized, split.audio, cfg.note, path, split.index,
                                        failed, int(sample_rate)))


def _failed_rows(part: Path) -> np.ndarray:
    with np.load(part) as z:
        return z["failed"]


#: (the call's settings) -> (its cache file's stat when read, the corpus), the most recently used last
_IN_MEMORY: dict[tuple, tuple[tuple[int, int, int], CorpusRenders]] = {}


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _recall(key: tuple) -> CorpusRenders | None:
    """The corpus kept in memory for ``key`` while its cache file is the one it was read from (or
    written as); kept corpora whose file changed or went are dropped."""
    for k, (sig, corpus) in list(_IN_MEMORY.items()):
        if _signature(corpus.path) != sig:
            del _IN_MEMORY[k]
    entry = _IN_MEMORY.pop(key, None)
    if entry is None:
        return None
    _IN_MEMORY[key] = entry  # the most recently used
    return entry[1]


def _remember(key: tuple, corpus: CorpusRenders) -> CorpusRenders:
    """Keep ``corpus`` (its arrays made read-only: every later call shares them) for :func:`_recall`."""
    for a in (corpus.normalized, corpus.audio, corpus.index):
        a.flags.writeable = False
    _IN_MEMORY.pop(key, None)
    sig = _signature(corpus.path)
    if sig is not None and KEEP_IN_MEMORY > 0:
        _IN_MEMORY[key] = (sig, corpus)
        while len(_IN_MEMORY) > KEEP_IN_MEMORY:
            del _IN_MEMORY[next(iter(_IN_MEMORY))]
    return corpus


def _load_final(path: Path, fingerprint: dict[str, Any], names: list[str], normalized: np.ndarray,
                shape: tuple[int, int], sample_rate: int) -> CorpusRenders | None:
    """The cached renders if ``path`` is a complete file of exactly this corpus and settings, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if json.loads(str(z["fingerprint"])) != fingerprint:
                return None
            index, stored_names, failed = z["index"], [str(s) for s in z["names"]], [str(s) for s in z["failed"]]
            stored, audio = z["normalized"], z["audio"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if (audio.shape != (len(index), *shape) or str(audio.dtype) != AUDIO_DTYPE or len(index) + len(failed) != len(names)
            or stored_names != [names[i] for i in index.tolist()] or not np.array_equal(stored, normalized[index])):
        return None
    return CorpusRenders(stored_names, stored, audio, int(fingerprint["note"]), path, index, failed, sample_rate)


# ------------------------------------------------------------------------------------ search
def _target(corpus: CorpusRenders, target_audio: np.ndarray) -> np.ndarray:
    """``target_audio`` [C, T] (or [T] / [1, T], spread over the corpus's channels) as [C, T] float32."""
    t = np.asarray(target_audio, np.float32)
    c, n = corpus.audio.shape[1:]
    if t.ndim == 1:
        t = t[None]
    if t.ndim == 2 and t.shape[0] == 1 and c > 1:
        t = np.repeat(t, c, axis=0)
    if t.shape != (c, n):
        raise ValueError(f"target_audio: expected [{c}, {n}] (the corpus renders' channels and samples: "
                         f"{n / corpus.sample_rate:g} s at {corpus.sample_rate} Hz), got "
                         f"{list(np.shape(target_audio))}; condition it first (training.targets.condition_audio) "
                         "or render the corpus at its length")
    return t


def best_in_corpus_by_mss(corpus: CorpusRenders, target_audio: np.ndarray, sample_rate: int,
                          batch: int = 128) -> tuple[int, np.ndarray]:
    """(row of the smallest ``mss``, ``mss`` [N] of every corpus render against ``target_audio``
    [C, T] float32): the multi-resolution STFT distance of :func:`training.evaluate_core.audio_metrics`."""
    from training.evaluate_core import mss_to_one

    if int(sample_rate) != corpus.sample_rate:
        raise ValueError(f"sample_rate: the corpus was rendered at {corpus.sample_rate} Hz, got {sample_rate}; "
                         "resample the target or render the corpus at its rate")
    mss = mss_to_one(corpus.audio, _target(corpus, target_audio), batch)
    return int(np.argmin(mss)), mss
