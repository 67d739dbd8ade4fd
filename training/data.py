"""Datasets of (real-plugin audio, preset) pairs: sample presets, render them, store shards.

Presets are sampled from the synth's parameter description: the spec's uniform prior, a prior
fitted to the factory presets (per-parameter histograms / choice frequencies), or a mixture of
the two (``data.factory_prior_weight``). They are rendered through the **real plugin** with the
host's worker pool (never through the proxy) and stored as ``.npz`` shards beside a JSON
manifest, in a directory named by a hash of everything that determines the content:

    <data.cache_dir>/<synth>-<hash12>/manifest.json
                                     /train-0000.npz  (audio [B, C, T], normalized, internal, index)
                                     /val-0000.npz ...

A matching directory is reused. Generation is resumable: every shard is written to a temporary
file and moved into place with ``os.replace``, so after a kill -9 the finished shards are kept,
and a missing, partial or corrupt shard is rendered again. With a fixed ``data.seed`` the presets
are identical, and so is the audio of every preset whose sound does not depend on the plugin's
global noise generator (``Synth.reproducible``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from proxies.files import atomic_savez, atomic_write_json
from proxies.params import SynthSpec
from proxies.synth import Synth, get_synth
from training.config import DataConfig

FORMAT_VERSION = 2  # 2: every shard stores each preset's pitch and velocity
SPLITS = ("train", "val", "test")
#: with ``data.note_range``: the training presets rendered again at ``data.note`` (the nearest-neighbour
#: lookup's gallery at the held-out sets' note)
GALLERY = "gallery"
_SPLIT_STREAM = {"train": 1, "val": 2, "test": 3, "factory": 4}
_NOTE_STREAM = 100  # added to the split's stream: the notes' own random stream
_HIST_BINS = 20
_HIST_ALPHA = 0.5  # additive smoothing (pseudo-count per bin / choice) of the factory prior


# --------------------------------------------------------------------------------- synth lookups
def synth_of(cfg: DataConfig) -> Synth:
    """The synth a data config names, through the synth contract (``proxies.synth.get_synth``)."""
    return get_synth(cfg.synth, cfg.spec or None)


def spec_of(synth: str) -> SynthSpec:
    """The parameter description of a registered synth (``vst:PATH`` included)."""
    return get_synth(synth).spec


def factory_presets(synth: str | Synth) -> tuple[list[str], np.ndarray]:
    """(names, normalized [N, n_params] float64) of the synth's human-made presets (its corpus)."""
    s = get_synth(synth)
    if s.presets.corpus is None:
        raise ValueError(f"{s.name} has no human preset corpus: set data.factory_prior_weight = 0 and "
                         "eval.n_factory = 0")
    names, normalized = s.presets.corpus()
    return list(names), np.asarray(normalized, dtype=np.float64)


# -------------------------------------------------------------------------------------- priors
@dataclass(frozen=True)
class FactoryPrior:
    """Independent per-parameter marginals fitted to factory presets.

    Continuous parameters: a ``_HIST_BINS``-bin histogram over normalized [0, 1] (sample a bin,
    then uniformly inside it). Stepped parameters: choice frequencies. Both additively smoothed,
    so every value keeps a non-zero probability.
    """

    bin_probs: np.ndarray  # [n_params, _HIST_BINS] (continuous rows used)
    choice_probs: tuple[np.ndarray | None, ...]  # per parameter: [n_steps + 1] or None

    def digest(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.bin_probs).tobytes())
        for p in self.choice_probs:
            h.update(b"-" if p is None else np.ascontiguousarray(p).tobytes())
        return h.hexdigest()


def fit_factory_prior(spec: SynthSpec, normalized: np.ndarray) -> FactoryPrior:
    """Fit :class:`FactoryPrior` to factory presets ``normalized`` [N, n_params]."""
    n = np.asarray(normalized, dtype=np.float64)
    bins = np.zeros((spec.n_params, _HIST_BINS))
    choices: list[np.ndarray | None] = []
    cats = spec.category_of(n)
    for i, p in enumerate(spec.params):
        if p.is_stepped:
            counts = np.bincount(cats[:, i].clip(0, p.n_steps), minlength=p.n_steps + 1).astype(np.float64)
            counts += _HIST_ALPHA
            choices.append(counts / counts.sum())
        else:
            counts, _ = np.histogram(np.clip(n[:, i], 0.0, 1.0), bins=_HIST_BINS, range=(0.0, 1.0))
            counts = counts.astype(np.float64) + _HIST_ALPHA
            bins[i] = counts / counts.sum()
            choices.append(None)
    return FactoryPrior(bins, tuple(choices))


def sample_presets(
    synth: Synth | SynthSpec,
    rng: np.random.Generator,
    n: int,
    factory_prior: FactoryPrior | None = None,
    factory_weight: float = 0.0,
    frozen: dict[str, float] | None = None,
) -> np.ndarray:
    """``n`` presets as snapped normalized values [n, n_params] (float64).

    Each preset comes from ``factory_prior`` with probability ``factory_weight`` and from the
    synth's sampling prior (``Synth.sample_presets``; a bare spec: its uniform prior)
    otherwise; ``fixed`` parameters take their defaults and ``frozen`` parameters (name ->
    normalized) their given value.
    """
    if factory_weight > 0 and factory_prior is None:
        raise ValueError("factory_weight > 0 needs a factory_prior (see fit_factory_prior)")
    if isinstance(synth, Synth):
        spec = synth.spec
        out = synth.sample_presets(rng, n, frozen=dict(frozen or {}))
    else:
        spec = synth
        out = spec.sample_normalized(rng, n, frozen=dict(frozen or {}))
    use_factory = rng.random(n) < factory_weight
    if factory_prior is not None and use_factory.any():
        m = int(use_factory.sum())
        fp = np.empty((m, spec.n_params))
        for i, p in enumerate(spec.params):
            if p.is_stepped:
                probs = factory_prior.choice_probs[i]
                fp[:, i] = rng.choice(len(probs), size=m, p=probs) / p.n_steps
            else:
                b = rng.choice(_HIST_BINS, size=m, p=factory_prior.bin_probs[i])
                fp[:, i] = (b + rng.random(m)) / _HIST_BINS
        keep = np.array([p.prior == "fixed" or p.name in (frozen or {}) for p in spec.params])
        fp[:, keep] = out[use_factory][:, keep]
        out[use_factory] = fp
    return np.asarray(spec.snap_normalized(out), dtype=np.float64)


def split_presets(cfg: DataConfig, split: str, factory_prior: FactoryPrior | None = None) -> np.ndarray:
    """The deterministic presets [n_split, n_params] of ``split`` (train / val / test).

    The test split always comes from the uniform prior, so the ``random`` targets are the same
    presets whatever ``data.factory_prior_weight`` a run trains with (figures stay comparable).
    Train and val mix in ``factory_prior`` (:func:`training_factory_prior`) at that weight."""
    synth = synth_of(cfg)
    if split == GALLERY:
        split = "train"
    n = split_sizes(cfg)[split]
    weight = 0.0 if split == "test" else cfg.factory_prior_weight
    if weight > 0 and factory_prior is None:
        raise ValueError("data.factory_prior_weight > 0: pass the prior, training_factory_prior(cfg, eval.n_factory)")
    rng = np.random.default_rng([cfg.seed, _SPLIT_STREAM[split]])
    return sample_presets(synth, rng, n, factory_prior if weight > 0 else None, weight, dict(cfg.frozen))


def split_notes(cfg: DataConfig, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(pitch [n], velocity [n]) int64 of ``split``'s presets: drawn uniformly from
    ``data.note_range`` / ``data.velocity_range`` for train and val (seeded), ``data.note`` /
    ``data.velocity`` for the test split, the gallery, and when no range is set."""
    pitch = np.full(n, int(cfg.note), np.int64)
    velocity = np.full(n, int(cfg.velocity), np.int64)
    if split in ("train", "val"):
        rng = np.random.default_rng([cfg.seed, _SPLIT_STREAM[split] + _NOTE_STREAM])
        if cfg.note_range:
            pitch = rng.integers(cfg.note_range[0], cfg.note_range[1] + 1, n)
        if cfg.velocity_range:
            velocity = rng.integers(cfg.velocity_range[0], cfg.velocity_range[1] + 1, n)
    return pitch.astype(np.int64), velocity.astype(np.int64)


def dataset_splits(cfg: DataConfig) -> tuple[str, ...]:
    """The splits a data config renders: train, val, test, and the gallery with a note range."""
    return SPLITS + ((GALLERY,) if cfg.note_range else ())


def split_sizes(cfg: DataConfig) -> dict[str, int]:
    """Presets per split of :func:`dataset_splits` (the gallery: the training presets again)."""
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test, GALLERY: cfg.n_train}
    return {s: sizes[s] for s in dataset_splits(cfg)}


def _factory_eval_indices(cfg: DataConfig, n_corpus: int, n: int) -> np.ndarray:
    rng = np.random.default_rng([cfg.seed, _SPLIT_STREAM["factory"]])
    return np.sort(rng.choice(n_corpus, size=min(n, n_corpus), replace=False))


def factory_eval_presets(cfg: DataConfig, n: int) -> tuple[list[str], np.ndarray]:
    """``n`` factory presets (names, normalized), a fixed pseudo-random choice given ``data.seed``."""
    names, normalized = factory_presets(synth_of(cfg))
    idx = _factory_eval_indices(cfg, len(names), n)
    return [names[i] for i in idx], normalized[idx]


def training_factory_prior(cfg: DataConfig, n_eval_factory: int) -> FactoryPrior | None:
    """The factory prior the training and validation presets mix in (``data.factory_prior_weight``;
    None at 0): fitted to the synth's human presets except the ``n_eval_factory`` that the evaluation
    scores (:func:`factory_eval_presets`, ``eval.n_factory``) and their copies elsewhere in the corpus,
    so the factory targets stay held out."""
    if cfg.factory_prior_weight <= 0:
        return None
    synth = synth_of(cfg)
    names, normalized = factory_presets(synth)
    held = {row.tobytes() for row in normalized[_factory_eval_indices(cfg, len(names), n_eval_factory)]}
    keep = np.array([row.tobytes() not in held for row in normalized], dtype=bool)
    return fit_factory_prior(synth.spec, normalized[keep])


# ------------------------------------------------------------------------------------ rendering
class EngineRenderer:
    """Renders normalized presets through the synth's real engine, with the data config's note.

    The one place training code opens a real engine (``Synth.open_engine``: a DawDreamer worker
    pool, an in-process engine, ...). Use as a context manager; :meth:`render` returns
    ``(audio [B, channels, n_samples] float32, ok [B] bool)``. Failed presets come back as
    silence with ``ok`` False. ``pitch`` (int ``[B]`` or one int) plays other notes than
    ``data.note`` (velocity, hold and length stay the config's).
    """

    def __init__(self, cfg: DataConfig, workers: int | None = None):
        self.cfg = cfg
        self.synth = synth_of(cfg)
        self.workers = cfg.workers if workers is None else workers
        self._engine = None

    @property
    def channels(self) -> int:
        return int(self.synth.channels)

    def __enter__(self) -> "EngineRenderer":
        if self.cfg.backend == "ray":  # Ray tasks, each with its own engine (proxies.ray_engine)
            from proxies.ray_engine import open_ray_engine  # noqa: PLC0415  (imports ray lazily)

            self._engine = open_ray_engine(self.synth, self.cfg.sample_rate, self.workers,
                                           address=self.cfg.ray_address)
        else:
            self._engine = self.synth.open_engine(self.cfg.sample_rate, workers=self.workers)
        return self

    def __exit__(self, *exc: Any) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def notes(self, pitch: int | None = None, velocity: int | None = None) -> tuple[Any, ...]:
        from proxies.notes import Note

        c = self.cfg
        return (Note(pitch=c.note if pitch is None else int(pitch), velocity=c.velocity if velocity is None
                     else int(velocity), start_s=0.0, hold_s=c.hold_s),)

    def render(self, normalized: np.ndarray, pitch: Any = None, velocity: Any = None) -> tuple[np.ndarray, np.ndarray]:
        if self._engine is None:
            raise RuntimeError("EngineRenderer.render outside its `with` block; use `with EngineRenderer(cfg) as r:`")
        normalized = np.asarray(normalized, dtype=np.float64)
        if pitch is None and velocity is None:
            notes: Any = self.notes()
        else:
            n = len(normalized)
            pitches = np.broadcast_to(np.asarray(self.cfg.note if pitch is None else pitch, dtype=np.int64), (n,))
            vels = np.broadcast_to(np.asarray(self.cfg.velocity if velocity is None else velocity, dtype=np.int64),
                                   (n,))
            notes = [self.notes(int(p), int(v)) for p, v in zip(pitches, vels)]
        audio, failures = self._engine.render(normalized, notes, self.cfg.duration_s)
        audio = np.asarray(audio, dtype=np.float32)
        n_samples = self.cfg.n_samples
        if audio.shape != (len(normalized), self.channels, n_samples):
            raise RuntimeError(f"the {self.synth.name} engine returned audio of shape {audio.shape}; expected "
                               f"[{len(normalized)}, {self.channels}, {n_samples}]")
        ok = np.ones(len(normalized), dtype=bool)
        for f in failures or ():
            ok[_failure_index(f)] = False
        audio[~ok] = 0.0
        if not np.all(np.isfinite(audio[ok])):
            bad = ~np.isfinite(audio).reshape(len(audio), -1).all(axis=1)
            ok &= ~bad
            audio[bad] = 0.0
        return audio, ok


def _failure_index(f: Any) -> int:
    if isinstance(f, (int, np.integer)):
        return int(f)
    if isinstance(f, (tuple, list)) and f:
        return int(f[0])
    for attr in ("index", "i", "row"):
        if hasattr(f, attr):
            return int(getattr(f, attr))
    raise TypeError(f"cannot read a preset index from render failure {f!r}")


# ----------------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class Split:
    """One split in memory: ``audio`` [N, C, T] (float16 or float32, C the synth's channels), ``normalized`` and
    ``internal`` [N, n_params], ``index`` [N] (row in the split's preset list), ``pitch`` and
    ``velocity`` [N] (the MIDI note each preset was rendered with)."""

    audio: np.ndarray
    normalized: np.ndarray
    internal: np.ndarray
    index: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


@dataclass(frozen=True)
class Dataset:
    root: Path
    manifest: dict[str, Any]
    train: Split
    val: Split
    test: Split
    gallery: Split | None = None  # the training presets at data.note (with data.note_range), else None

    @property
    def lookup(self) -> Split:
        """The nearest-neighbour gallery at the held-out sets' note: ``gallery``, else ``train``."""
        return self.gallery if self.gallery is not None else self.train

    def training_split(self, with_gallery: bool) -> Split:
        """What the model trains on: ``train``, followed by ``gallery`` when ``with_gallery`` and there
        is one (``data.train_on_gallery``; each preset then plays its random note and data.note)."""
        if not with_gallery or self.gallery is None:
            return self.train
        return Split(**{f.name: np.concatenate([getattr(self.train, f.name), getattr(self.gallery, f.name)])
                        for f in dataclasses.fields(Split)})


def data_fingerprint(cfg: DataConfig, spec: SynthSpec, prior: FactoryPrior | None) -> dict[str, Any]:
    """Everything that determines the dataset's content (not ``workers``, ``backend``,
    ``ray_address`` or ``cache_dir``: every backend renders the same files; not
    ``train_on_gallery``, which only chooses what training reads). With a factory prior, also
    that the test split is uniform (datasets made before it was are not reused)."""
    fields = dataclasses.asdict(cfg)
    for k in ("workers", "backend", "ray_address", "cache_dir", "train_on_gallery"):
        fields.pop(k)
    fields["frozen"] = dict(sorted(cfg.frozen.items()))
    if not fields["spec"]:  # a registered synth: its spec is in spec_sha256
        fields.pop("spec")
    spec_hash = hashlib.sha256(json.dumps(spec.table(), sort_keys=True, default=str).encode()).hexdigest()
    fields["note_range"], fields["velocity_range"] = list(cfg.note_range), list(cfg.velocity_range)  # as JSON has them
    return {
        "format_version": FORMAT_VERSION,
        "data": fields,
        "spec_sha256": spec_hash,
        "factory_prior_sha256": prior.digest() if prior is not None else None,
    } | ({"test_prior": "uniform"} if prior is not None else {})


def dataset_dir(cfg: DataConfig, fingerprint: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
    name = cfg.synth if not cfg.synth.startswith("vst:") else "vst-" + Path(cfg.synth[4:].rstrip("/")).stem
    return Path(cfg.cache_dir) / f"{name}-{digest}"


def build_dataset(cfg: DataConfig, progress: bool = True, log: Callable[[str], None] = print,
                  n_eval_factory: int | None = None) -> Dataset:
    """Load the dataset for ``cfg``, rendering whatever shards are missing or damaged.

    ``n_eval_factory`` (``eval.n_factory``) is needed with ``data.factory_prior_weight`` > 0: the
    factory presets the evaluation scores are left out of the prior (:func:`training_factory_prior`)."""
    synth = synth_of(cfg)
    spec = synth.spec
    if cfg.factory_prior_weight > 0 and n_eval_factory is None:
        raise ValueError("data.factory_prior_weight > 0: build_dataset needs n_eval_factory (eval.n_factory), "
                         "the factory presets held out of the prior")
    prior = training_factory_prior(cfg, n_eval_factory or 0)
    fingerprint = data_fingerprint(cfg, spec, prior)
    root = dataset_dir(cfg, fingerprint)
    root.mkdir(parents=True, exist_ok=True)
    for tmp in root.glob("*.tmp*"):  # leftovers of a killed writer
        tmp.unlink(missing_ok=True)
    splits = dataset_splits(cfg)
    presets = {s: split_presets(cfg, s, prior) for s in splits if s != GALLERY}
    if GALLERY in splits:
        presets[GALLERY] = presets["train"]  # played again at data.note
    notes = {s: split_notes(cfg, s, len(presets[s])) for s in splits}
    plan = [(s, k, rows) for s in splits for k, rows in enumerate(_shard_rows(len(presets[s]), cfg.shard_size))]

    manifest_path = root / "manifest.json"
    manifest = _read_json(manifest_path) or {}
    if manifest.get("fingerprint") not in (None, fingerprint):
        raise RuntimeError(f"{manifest_path} describes a different dataset (hash collision or edited file); "
                           f"delete {root} and rerun")
    shards_info: dict[str, Any] = dict(manifest.get("shards", {}))

    todo = []
    for split, k, rows in plan:
        name = f"{split}-{k:04d}.npz"
        if _shard_valid(root / name, presets[split][rows], notes[split][0][rows], notes[split][1][rows], rows, cfg,
                        synth.channels):
            continue
        todo.append((split, k, rows, name))
    if todo:
        n_render = sum(len(r) for _, _, r, _ in todo)
        log(f"[data] {root}: rendering {n_render} presets in {len(todo)} shard(s) through the real "
            f"{synth.name} engine ({cfg.workers} workers)")
        _write_json(manifest_path, _manifest(fingerprint, cfg, shards_info, complete=False))
        t0 = time.perf_counter()
        with EngineRenderer(cfg) as renderer, _progress(n_render, progress) as bar:
            for split, k, rows, name in todo:
                pitch, velocity = (x[rows] for x in notes[split])
                audio, ok = _render_chunks(renderer, presets[split][rows], pitch, velocity, bar)
                rows_ok = np.asarray(rows)[ok]
                failed = np.asarray(rows)[~ok]
                if len(failed):
                    log(f"[data] {split} shard {k}: {len(failed)} preset(s) failed to render and are dropped: "
                        f"rows {failed.tolist()[:10]}{' ...' if len(failed) > 10 else ''}")
                normalized = presets[split][rows_ok]
                atomic_savez(root / name, audio=audio[ok].astype(cfg.audio_dtype), normalized=normalized,
                              internal=np.asarray(spec.normalized_to_internal(normalized), dtype=np.float32),
                              index=rows_ok.astype(np.int64), failed=failed.astype(np.int64),
                              pitch=pitch[ok], velocity=velocity[ok])
                shards_info[name] = {"split": split, "rows": len(rows), "kept": int(ok.sum()),
                                     "failed": failed.tolist()}
                _write_json(manifest_path, _manifest(fingerprint, cfg, shards_info, complete=False))
        dt = time.perf_counter() - t0
        log(f"[data] rendered {n_render} presets in {dt:.1f} s ({n_render / max(dt, 1e-9):.1f} renders/s)")
        render_stats = {"renders": n_render, "seconds": round(dt, 3),
                        "renders_per_s": round(n_render / max(dt, 1e-9), 2), "workers": cfg.workers}
    else:
        render_stats = manifest.get("render_stats")
    manifest = _manifest(fingerprint, cfg, shards_info, complete=True)
    manifest["render_stats"] = render_stats
    _write_json(manifest_path, manifest)
    loaded = {s: _load_split(root, s, [k for (sp, k, _) in plan if sp == s]) for s in splits}
    return Dataset(root=root, manifest=manifest, **loaded)


def _manifest(fingerprint: dict[str, Any], cfg: DataConfig, shards: dict[str, Any], complete: bool) -> dict:
    return {
        "fingerprint": fingerprint,
        "complete": complete,
        "n_samples": cfg.n_samples,
        "splits": split_sizes(cfg),
        "shards": dict(sorted(shards.items())),
    }


def _shard_rows(n: int, shard_size: int) -> list[np.ndarray]:
    return [np.arange(a, min(a + shard_size, n)) for a in range(0, n, shard_size)]


def _render_chunks(renderer: EngineRenderer, normalized: np.ndarray, pitch: np.ndarray, velocity: np.ndarray,
                   bar: Any, chunk: int = 64):
    audios, oks = [], []
    for a in range(0, len(normalized), chunk):
        audio, ok = renderer.render(normalized[a:a + chunk], pitch[a:a + chunk], velocity[a:a + chunk])
        audios.append(audio)
        oks.append(ok)
        bar.update(len(audio))
    return np.concatenate(audios), np.concatenate(oks)


def _shard_valid(path: Path, expected: np.ndarray, pitch: np.ndarray, velocity: np.ndarray, rows: np.ndarray,
                 cfg: DataConfig, channels: int) -> bool:
    """A finished shard: readable, complete, and holding exactly the expected presets and notes."""
    if not path.is_file():
        return False
    try:
        with np.load(path) as z:
            index, failed, normalized = z["index"], z["failed"], z["normalized"]
            stored_pitch, stored_velocity = z["pitch"], z["velocity"]
            audio_shape, audio_dtype = z["audio"].shape, z["audio"].dtype
            _ = z["internal"].shape
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return False
    if sorted(index.tolist() + failed.tolist()) != list(map(int, rows)):
        return False
    if audio_shape != (len(index), channels, cfg.n_samples) or str(audio_dtype) != cfg.audio_dtype:
        return False
    at = index - rows[0]
    return bool(np.array_equal(normalized, expected[at]) and np.array_equal(stored_pitch, pitch[at])
                and np.array_equal(stored_velocity, velocity[at]))


def _load_split(root: Path, split: str, shard_ids: Sequence[int]) -> Split:
    parts: dict[str, list[np.ndarray]] = {"audio": [], "normalized": [], "internal": [], "index": [], "pitch": [],
                                          "velocity": []}
    for k in shard_ids:
        with np.load(root / f"{split}-{k:04d}.npz") as z:
            for key in parts:
                parts[key].append(z[key])
    return Split(**{k: np.concatenate(v) for k, v in parts.items()})


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj, sort_keys=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class _NullBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> "_NullBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NullBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="render", desc="render presets", smoothing=0.1, dynamic_ncols=True)


def iterate_batches(n: int, batch_size: int, seed: int, start_step: int = 0) -> Iterator[np.ndarray]:
    """Row indices of the batches of training step ``start_step``, ``start_step + 1``, ...

    Batch ``s`` depends only on (seed, s): epoch ``e = s // steps_per_epoch`` uses the
    permutation ``default_rng([seed, e])`` and takes its ``s % steps_per_epoch``-th slice, so a
    resumed run sees exactly the batches an uninterrupted run would.
    """
    steps_per_epoch = max(1, n // batch_size)
    step = start_step
    perm_epoch, perm = -1, None
    while True:
        epoch, j = divmod(step, steps_per_epoch)
        if epoch != perm_epoch:
            perm = np.random.default_rng([seed, 1000 + epoch]).permutation(n)
            perm_epoch = epoch
        yield perm[j * batch_size:(j + 1) * batch_size]
        step += 1
