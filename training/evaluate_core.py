"""Evaluation through the real plugin: the pieces ``fit``, ``evaluate`` and ``match`` share.

* :class:`Predictor` / :func:`load_predictor`: a trained run -> ``predict_normalized(audio)``.
* :func:`audio_metrics`: per-sound multi-resolution STFT distance (``mss``), log-mel L1 (dB)
  and MFCC L1 between two batches of audio.
* :func:`param_metrics`: per-sound parameter MAE (continuous learned parameters, normalized)
  and categorical accuracy.
* :func:`mean_preset`, :func:`nearest_neighbour`: the baselines.
* :func:`score_presets`: presets -> real-plugin re-render -> metrics against targets.
* :func:`evaluate`: the end-of-fit evaluation on held-out random presets and on factory presets,
  model against baselines; returns the ``{"eval": {"random": {"model": {...}, "mean_preset":
  {...}, "nearest_neighbour": {...}}, "factory": {...}}}`` block of ``summary.json``. ``model``
  is the network's prediction alone; ``model+proxy_search`` (when ``eval.proxy_search_rounds``
  > 0) is that prediction improved through the proxy (``training.proxy_search``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from training.config import Config, DataConfig, from_dict
from training.data import Dataset, EngineRenderer, factory_eval_presets, synth_of
from training.features import make_feature_fn
from training.heads import (HeadLayout, candidate_presets, hard_normalized, head_layout, note_features,
                            probabilities)
from training.models import flow_method, make_model
from training.state import network_outputs

from training.methods import METHOD_NOTES, METHODS, PROXY_METHODS  # noqa: F401  (re-exported)
METRIC_KEYS = ("mss", "logmel_l1", "mfcc_l1", "param_mae", "cat_acc")


# ---------------------------------------------------------------------------------- predictor
@dataclass
class Predictor:
    """A trained encoder: real-engine audio [B, C, T] -> presets [B, n_params] (normalized,
    snapped to the plugin's grid, non-predicted parameters at the base preset)."""

    cfg: Config
    layout: HeadLayout
    params: Any
    feature_mean: Any
    feature_std: Any
    feature_fn: Callable
    _apply: Callable = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._apply = _predict_fn(self.cfg.model, self.layout, self.feature_fn)

    def predict_normalized(self, audio: np.ndarray, pitch: Any = None, velocity: Any = None) -> np.ndarray:
        return self.predict(audio, pitch, velocity)[0]

    def outputs(self, audio: np.ndarray, pitch: Any = None, velocity: Any = None) -> dict[str, Any]:
        """The network's outputs (host arrays, ``training.heads``) for real-engine audio
        [B, C, T] playing MIDI ``pitch`` / ``velocity`` (ints or [B]; default the run's
        ``data.note`` / ``data.velocity``), ``eval.batch_size`` at a time (one compiled shape)."""
        audio = np.asarray(audio)
        n_samples = self.cfg.data.n_samples
        channels = synth_of(self.cfg.data).channels
        if audio.ndim != 3 or audio.shape[1] != channels or audio.shape[2] != n_samples:
            raise ValueError(f"expected audio of shape [batch, {channels}, {n_samples}] ({self.cfg.data.duration_s} s "
                             f"at {self.cfg.data.sample_rate} Hz, {channels} channel(s)), got {audio.shape}; render "
                             "or resample the target with the run's data settings")
        n = len(audio)
        pitch = np.broadcast_to(np.asarray(self.cfg.data.note if pitch is None else pitch, np.float32), (n,))
        velocity = np.broadcast_to(np.asarray(self.cfg.data.velocity if velocity is None else velocity, np.float32),
                                   (n,))
        note = np.asarray(note_features(pitch, velocity, np), np.float32)
        if not n:
            raise ValueError("expected at least one sound to predict, got none")
        return _in_padded_batches(lambda a, nf: self._apply(self.params, self.feature_mean, self.feature_std, a, nf),
                                  self.cfg.eval.batch_size, audio, note)

    def predict(self, audio: np.ndarray, pitch: Any = None, velocity: Any = None
                ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """``(presets [B, n_params], probabilities)``: the network's one preset per sound
        (normalized, snapped to the synth's grid) and, per categorical learned parameter, its
        choice probabilities [B, n_choices]."""
        out = self.outputs(audio, pitch, velocity)
        return self.presets(out), tuple(np.asarray(p) for p in probabilities(out))

    def presets(self, outputs: dict[str, Any]) -> np.ndarray:
        """The one preset [B, n_params] of :meth:`outputs` (normalized, snapped)."""
        normalized = np.asarray(hard_normalized(self.layout, outputs), np.float64)
        return np.asarray(self.layout.spec.snap_normalized(normalized), dtype=np.float64)

    def candidates(self, outputs: dict[str, Any], k: int, seed: int = 0) -> np.ndarray:
        """``k`` candidate presets per sound [B, k, n_params] from :meth:`outputs`
        (:func:`training.heads.candidate_presets`; candidate 0 is the one preset). The flow head
        draws its ``k - 1`` others here: the flow integrated from Gaussian noise, categoricals
        sampled from the decoder's softmax for those continuous values."""
        rng = np.random.default_rng([seed, 17])
        if "flow_h" in outputs and k > 1:
            outputs = {**outputs, **self._flow_draws(np.asarray(outputs["flow_h"]), k - 1, rng)}
        return candidate_presets(self.layout, outputs, k, rng)

    def _flow_draws(self, h: np.ndarray, draws: int, rng: np.random.Generator) -> dict[str, Any]:
        y0 = rng.standard_normal((len(h), draws, self.layout.n_continuous)).astype(np.float32)
        sample = _flow_sample_fn(self.cfg.model, self.layout)
        cont, logits = _in_padded_batches(lambda h_, y0_: sample(self.params, h_, y0_), self.cfg.eval.batch_size, h, y0)
        return {"flow_continuous": cont, "flow_logits": logits}


def _in_padded_batches(fn: Callable, batch_size: int, *arrays: np.ndarray) -> Any:
    """``fn(*arrays)`` evaluated ``batch_size`` rows at a time, the last batch zero-padded (one
    compiled shape), its outputs (any tree of [rows, ...] arrays) cut back and joined on host."""
    n, parts = len(arrays[0]), []
    for a in range(0, n, batch_size):
        rows = min(batch_size, n - a)
        padded = [jnp.asarray(np.pad(x[a:a + batch_size], [(0, batch_size - rows)] + [(0, 0)] * (x.ndim - 1)))
                  for x in arrays]
        parts.append(jax.tree.map(lambda y: np.asarray(y)[:rows], jax.device_get(fn(*padded))))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


@functools.lru_cache(maxsize=16)
def _flow_sample_fn(model_cfg: Any, layout: HeadLayout) -> Callable:
    model = make_model(model_cfg, layout)
    return jax.jit(lambda params, h, y0: model.apply({"params": params}, h, y0, method=flow_method("sample")))


@functools.lru_cache(maxsize=16)
def _predict_fn(model_cfg: Any, layout: HeadLayout, feature_fn: Callable) -> Callable:
    model = make_model(model_cfg, layout)

    def apply(params, mean, std, audio, note):
        return network_outputs(model.apply, params, mean, std, feature_fn, audio, note)

    return jax.jit(apply)


def model_parts(cfg: Config) -> tuple[HeadLayout, Callable, Any, tuple[jax.Array, jax.Array]]:
    """What a trained model of ``cfg`` is rebuilt from: its head layout, feature function, Flax
    module, and an example input (features [1, ...] of silence, note [1, 2]) to make its parameter
    tree with (``model.init``, or ``jax.eval_shape`` of it)."""
    synth = synth_of(cfg.data)
    layout = head_layout(synth.spec, cfg.data.frozen)
    feature_fn = make_feature_fn(cfg.features, cfg.data.sample_rate)
    example = feature_fn(jnp.zeros((1, synth.channels, cfg.data.n_samples), jnp.float32))
    note = jnp.asarray(note_features(np.full(1, cfg.data.note), np.full(1, cfg.data.velocity), np))
    return layout, feature_fn, make_model(cfg.model, layout), (example, note)


def load_predictor(run_dir: str | Path, which: str = "best") -> Predictor:
    """The :class:`Predictor` of a finished (or running) run: ``which`` = ``best`` or ``latest``."""
    from training.state import Checkpoints, TrainState, make_optimizer

    run_dir = Path(run_dir)
    if which not in ("best", "latest"):
        raise ValueError(f"which: expected 'best' or 'latest', got {which!r}")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found; expected a run directory written by "
                                "`python -m training.fit` (runs/<name>/)")
    cfg = from_dict(json.loads(cfg_path.read_text()))
    layout, feature_fn, model, example = model_parts(cfg)
    stats_shape = example[0].shape[-1:] if cfg.features.kind != "raw" else ()
    params = model.init(jax.random.key(0), *example)["params"]
    tx, _ = make_optimizer(cfg.optim)
    template = TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                                 feature_mean=jnp.zeros(stats_shape), feature_std=jnp.ones(stats_shape))
    ckpt = Checkpoints(run_dir / "checkpoints")
    mngr = ckpt.best if which == "best" else ckpt.latest
    got = ckpt._restore(mngr, template)
    if got is None:
        raise FileNotFoundError(f"{run_dir}/checkpoints/{which} holds no checkpoint; train first "
                                f"(python -m training.fit --config ... --set run.name={run_dir.name})")
    state = got[0]
    return Predictor(cfg, layout, state.params, state.feature_mean, state.feature_std, feature_fn)


# ---------------------------------------------------------------------------------- metrics
@functools.lru_cache(maxsize=8)
def _metric_fn(sample_rate: int) -> Callable:
    from diffsynth import losses

    def per_item(pred: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
        # [B, C, T] -> per-sound metrics: each channel scored as a signal, then averaged.
        out = {
            "mss": losses.multi_resolution_stft_loss(pred, target),
            "logmel_l1": losses.log_mel_l1(pred, target, sample_rate),
            "mfcc_l1": losses.mfcc_l1(pred, target, sample_rate),
        }
        return {k: v.mean(axis=-1) for k, v in out.items()}

    return jax.jit(per_item)


def audio_metrics(pred_audio: np.ndarray, target_audio: np.ndarray, sample_rate: int,
                  batch_size: int = 32) -> dict[str, np.ndarray]:
    """Per-sound ``mss`` (multi-resolution STFT distance, FFT 64..2048, linear + log magnitude),
    ``logmel_l1`` (dB) and ``mfcc_l1`` between ``pred_audio`` and ``target_audio`` [B, C, T]."""
    pred_audio, target_audio = np.asarray(pred_audio, np.float32), np.asarray(target_audio, np.float32)
    if pred_audio.shape != target_audio.shape:
        raise ValueError(f"audio_metrics: prediction {pred_audio.shape} and target {target_audio.shape} differ; "
                         "expected the same [batch, 2, n_samples]")
    fn = _metric_fn(int(sample_rate))
    out: dict[str, list[np.ndarray]] = {}
    for a in range(0, len(pred_audio), batch_size):
        n = min(batch_size, len(pred_audio) - a)
        pad = ((0, batch_size - n), (0, 0), (0, 0))
        m = fn(jnp.asarray(np.pad(pred_audio[a:a + n], pad)), jnp.asarray(np.pad(target_audio[a:a + n], pad)))
        for k, v in m.items():
            out.setdefault(k, []).append(np.asarray(v)[:n])
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()} if out else \
        {"mss": np.zeros(0), "logmel_l1": np.zeros(0), "mfcc_l1": np.zeros(0)}


@functools.lru_cache(maxsize=4)
def _mss_fn() -> Callable:
    from diffsynth import losses

    return jax.jit(lambda pred, target: losses.multi_resolution_stft_loss(
        pred, jnp.broadcast_to(target, pred.shape)).mean(axis=-1))


def mss_to_one(audio: np.ndarray, target: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """``mss`` [N] of every sound of ``audio`` [N, C, T] against one ``target`` [C, T]: the
    ``mss`` of :func:`audio_metrics` alone (a third of its cost), for ranking many candidates."""
    fn = _mss_fn()
    t = jnp.asarray(np.asarray(target, np.float32))
    out = []
    for a in range(0, len(audio), batch_size):
        chunk = np.asarray(audio[a:a + batch_size], np.float32)
        n = len(chunk)
        chunk = np.pad(chunk, ((0, batch_size - n), (0, 0), (0, 0)))  # one compiled shape
        out.append(np.asarray(fn(jnp.asarray(chunk), t))[:n])
    return np.concatenate(out) if out else np.zeros(0)


def param_metrics(layout: HeadLayout, pred: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sound ``param_mae`` (mean |error| of the continuous learned parameters, normalized)
    and ``cat_acc`` (fraction of categorical learned parameters whose choice is right)."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    cont = list(layout.continuous)
    mae = np.abs(pred[:, cont] - target[:, cont]).mean(axis=1) if cont else np.zeros(len(pred))
    cat = list(layout.categorical)
    spec = layout.spec
    acc = (spec.category_of(pred)[:, cat] == spec.category_of(target)[:, cat]).mean(axis=1) if cat else \
        np.ones(len(pred))
    return {"param_mae": mae, "cat_acc": acc}


# ---------------------------------------------------------------------------------- baselines
def mean_preset(layout: HeadLayout, train_normalized: np.ndarray) -> np.ndarray:
    """The mean training preset [n_params]: mean of each continuous parameter, most frequent
    choice of each categorical one, base values elsewhere."""
    spec = layout.spec
    out = np.asarray(layout.base_normalized, dtype=np.float64).copy()
    out[list(layout.continuous)] = train_normalized[:, list(layout.continuous)].mean(axis=0)
    cats = spec.category_of(train_normalized)
    for i, k in zip(layout.categorical, layout.n_choices):
        out[i] = np.bincount(cats[:, i], minlength=k).argmax() / (k - 1)
    return np.asarray(spec.snap_normalized(out[None]), dtype=np.float64)[0]


@functools.lru_cache(maxsize=8)
def _logmel_fn(sample_rate: int) -> Callable:
    from diffsynth import spectral

    def f(audio: jax.Array) -> jax.Array:  # [B, C, T] -> flattened log-mel of the mono mix [B, D]
        mel = spectral.log_mel_spectrogram(audio.astype(jnp.float32).mean(axis=1), sample_rate=sample_rate)
        return mel.reshape(mel.shape[0], -1)

    return jax.jit(f)


def logmel_embeddings(audio: np.ndarray, sample_rate: int, batch_size: int = 64) -> np.ndarray:
    """Flattened log-mel spectrograms [B, D] (float32) of audio [B, C, T], for nearest neighbours."""
    fn = _logmel_fn(int(sample_rate))
    out = []
    for a in range(0, len(audio), batch_size):
        n = min(batch_size, len(audio) - a)
        chunk = np.pad(np.asarray(audio[a:a + n], np.float32), ((0, batch_size - n), (0, 0), (0, 0)))
        out.append(np.asarray(fn(jnp.asarray(chunk)))[:n])
    return np.concatenate(out)


def nearest_neighbour(train_embeddings: np.ndarray, target_embeddings: np.ndarray, k: int = 1) -> np.ndarray:
    """Index of the training sound closest to each target (Euclidean log-mel distance): [B], or
    with ``k`` > 1 the ``k`` closest, nearest first, [B, k]."""
    tr = jnp.asarray(train_embeddings, jnp.float32)
    tr_sq = jnp.sum(tr * tr, axis=1)
    out = []
    for a in range(0, len(target_embeddings), 256):
        t = jnp.asarray(target_embeddings[a:a + 256], jnp.float32)
        d = tr_sq[None, :] - 2.0 * t @ tr.T  # + |t|^2, constant per row
        if k == 1:
            out.append(np.asarray(jnp.argmin(d, axis=1)))
        else:
            out.append(np.asarray(jax.lax.top_k(-d, min(k, tr.shape[0]))[1]))
    return np.concatenate(out)


# ---------------------------------------------------------------------------------- scoring
def score_presets(renderer: EngineRenderer, layout: HeadLayout, presets: np.ndarray, target_audio: np.ndarray,
                  target_normalized: np.ndarray | None, sample_rate: int) -> dict[str, np.ndarray]:
    """Re-render ``presets`` [B, n_params] through the real plugin and score against the targets.

    Returns per-sound arrays (``mss``, ``logmel_l1``, ``mfcc_l1``, and ``param_mae`` /
    ``cat_acc`` when ``target_normalized`` is given) plus ``ok`` (rendered without failure)."""
    audio, ok = renderer.render(presets)
    m = audio_metrics(audio, np.asarray(target_audio, np.float32), sample_rate)
    if target_normalized is not None:
        m.update(param_metrics(layout, presets, target_normalized))
    m["ok"] = ok
    return m


def _summarise(m: dict[str, np.ndarray], seconds_per_target: float) -> dict[str, float]:
    ok = m["ok"] & np.all([np.isfinite(m[k]) for k in ("mss", "logmel_l1", "mfcc_l1")], axis=0)
    out = {k: float(np.mean(m[k][ok])) for k in METRIC_KEYS if k in m}
    out.update(n=int(ok.sum()), failed=int((~ok).sum()), seconds_per_target=seconds_per_target)
    return out


class ModelRow(NamedTuple):
    """One of :func:`model_rows`: the scores of its presets (empty without ``score``), wall
    seconds and proxy renders per target, and the presets [N, n_params] it answered with."""

    scores: dict[str, np.ndarray]
    seconds_per_target: float
    proxy_renders: int
    presets: np.ndarray


def model_rows(predictor: Predictor, target_audio: np.ndarray,
               score: Callable[[np.ndarray], dict[str, np.ndarray]] | None, seed: int = 0, note: int | None = None,
               model_input: np.ndarray | None = None, model_note: int | None = None, lookup: np.ndarray | None = None,
               outputs: tuple[dict[str, Any], float] | None = None) -> dict[str, ModelRow]:
    """The trained model's rows on one target set, cheapest first: ``model`` (its one preset, no
    render), ``model+best_of_k`` (its ``eval.best_of_k`` candidates ranked by their proxy
    render's distance to the target), ``model+proxy_search`` (a guided search through the proxy
    from the first ranking's pick, ``eval.proxy_search_rounds`` x ``eval.proxy_search_candidates``
    renders more) and ``model+proxy_refine`` (from the same pick, ``eval.proxy_refine_steps``
    gradient steps through the proxy, :func:`proxy_refine`). Targets play ``note`` (default: the
    run's ``data.note``). ``score(presets)`` scores presets against the targets (a real-engine
    re-render; None: rows carry presets only). The proxy rows need a synth with a proxy. The
    encoder hears ``model_input`` (default: the targets) playing ``model_note`` (default:
    ``note``), or ``outputs`` gives what it answered (:meth:`Predictor.outputs`) and the seconds
    that took for the whole set.
    ``lookup`` [N, L, n_params]: presets of each target's nearest gallery sounds, which join the
    model's candidates in the first ranking (L proxy renders more; not in ``model+best_of_k``)."""
    cfg, layout = predictor.cfg, predictor.layout
    data = cfg.data if note is None else replace(cfg.data, note=int(note))
    n = max(len(target_audio), 1)
    rows: dict[str, ModelRow] = {}
    scored = score or (lambda _presets: {})
    if outputs is None:
        t0 = time.perf_counter()
        outs = predictor.outputs(target_audio if model_input is None else model_input,
                                 data.note if model_note is None else model_note, data.velocity)
        t_pred = time.perf_counter() - t0
    else:
        outs, t_pred = outputs
    pred = predictor.presets(outs)
    rows["model"] = ModelRow(scored(pred), t_pred / n, 0, pred)
    if not synth_of(cfg.data).has_proxy:
        return rows
    from training.proxy_search import best_of_k, proxy_search

    start, start_d, spent, renders = pred, None, 0.0, 0
    k = cfg.eval.best_of_k
    extra = lookup if lookup is not None and lookup.shape[1] else None
    if k > 0 or extra is not None:  # one ranking of the model's candidates and the lookup's presets
        own = predictor.candidates(outs, k, seed) if k > 0 else pred[:, None]
        pool = own if extra is None else np.concatenate([own, extra], axis=1)
        ranked = best_of_k(data, pool, target_audio, seed=seed)
        start, start_d, spent, renders = ranked.presets, ranked.proxy_distance, ranked.seconds, pool.shape[1]
        if k > 0:
            mine = own[np.arange(len(own)), ranked.distances[:, :k].argmin(axis=1)]
            rows["model+best_of_k"] = ModelRow(scored(mine), (t_pred + spent * k / pool.shape[1]) / n, k, mine)
    # model+proxy_search and model+proxy_refine both start from the ranking's pick (start)
    if cfg.eval.proxy_search_rounds > 0:
        probs = tuple(np.asarray(p) for p in probabilities(outs))
        found = proxy_search(data, layout, start, probs, target_audio, rounds=cfg.eval.proxy_search_rounds,
                             candidates=cfg.eval.proxy_search_candidates, sigma=cfg.eval.proxy_search_sigma,
                             seed=seed, start_distance=start_d, mutations=cfg.eval.proxy_search_mutations)
        rows["model+proxy_search"] = ModelRow(scored(found.presets), (t_pred + spent + found.seconds) / n,
                                              renders + found.renders_per_target, found.presets)
    steps = cfg.eval.proxy_refine_steps
    if steps > 0:
        refined, seconds = proxy_refine(data, cfg.loss.fft_sizes, start, target_audio, steps, cfg.eval.proxy_refine_lr,
                                        seed=seed, batch_size=min(cfg.eval.batch_size, _REFINE_BATCH))
        rows["model+proxy_refine"] = ModelRow(scored(refined), (t_pred + spent + seconds) / n, renders + steps + 1,
                                              refined)
    return rows


_REFINE_BATCH = 32  # targets per descent call (one compiled shape; the batch the default's settings were chosen with)


def proxy_refine(data: DataConfig, fft_sizes: Sequence[int], start: np.ndarray, target_audio: np.ndarray, steps: int,
                 lr: float, seed: int = 0, batch_size: int = _REFINE_BATCH) -> tuple[np.ndarray, float]:
    """``(presets [N, n_params], seconds)``: ``start`` refined towards ``target_audio`` [N, C, T] by
    :meth:`training.refine.ProxyRefiner.descend` (``steps`` proxy steps, each target keeping its
    point of least proxy distance), ``batch_size`` targets at a time, with a progress bar; the
    one-off compilation is not counted in the seconds."""
    from tqdm import tqdm

    from training.refine import get_refiner

    refiner = get_refiner(data, tuple(int(k) for k in fft_sizes), int(batch_size))
    out, seconds = np.asarray(start, np.float64).copy(), 0.0
    starts = range(0, len(start), batch_size)
    for a in tqdm(starts, desc=f"proxy refine: {steps} steps", unit="batch", leave=False,
                  disable=True if len(starts) <= 1 else None, dynamic_ncols=True):
        res = refiner.descend(start[a:a + batch_size], target_audio[a:a + batch_size], steps, seed=seed, lr=lr)
        out[a:a + batch_size] = res.presets
        seconds += res.seconds
    return out, seconds


def evaluate_targets(predictor: Predictor, renderer: EngineRenderer, target_audio: np.ndarray,
                     target_normalized: np.ndarray, lookup_normalized: np.ndarray, lookup_embeddings: np.ndarray,
                     mean: np.ndarray, log: Callable[[str], None] = print, set_name: str = "") -> dict[str, dict[str, float]]:
    """Model rows (:func:`model_rows`), mean-preset and nearest-neighbour scores on one target
    set (at the run's ``data.note``). ``lookup_*``: the nearest-neighbour gallery (presets and
    log-mel embeddings of their renders at that note)."""
    layout, cfg = predictor.layout, predictor.cfg
    sr = cfg.data.sample_rate
    results = {}

    def score(presets: np.ndarray) -> dict[str, np.ndarray]:
        return score_presets(renderer, layout, presets, target_audio, target_normalized, sr)

    t0 = time.perf_counter()
    near = nearest_neighbour(lookup_embeddings, logmel_embeddings(target_audio, sr), k=max(cfg.eval.lookup_candidates, 1))
    near = near.reshape(len(target_audio), -1)
    t_lookup = time.perf_counter() - t0
    lookup = lookup_normalized[near[:, :cfg.eval.lookup_candidates]]
    for name, row in model_rows(predictor, target_audio, score, cfg.run.seed, lookup=lookup).items():
        results[name] = {**_summarise(row.scores, row.seconds_per_target), "proxy_renders": row.proxy_renders}
        log(f"[eval] {set_name} {name}: mss {results[name]['mss']:.4f} ({row.seconds_per_target:.3f} s per target)")

    means = np.broadcast_to(mean, (len(target_audio), len(mean))).copy()
    m = score_presets(renderer, layout, means, target_audio, target_normalized, sr)
    results["mean_preset"] = _summarise(m, 0.0)

    m = score_presets(renderer, layout, lookup_normalized[near[:, 0]], target_audio, target_normalized, sr)
    results["nearest_neighbour"] = _summarise(m, t_lookup / max(len(target_audio), 1))
    log(f"[eval] {set_name} nearest_neighbour: mss {results['nearest_neighbour']['mss']:.4f}")
    return results


def evaluate(predictor: Predictor, dataset: Dataset, cfg: Config, renderer: EngineRenderer | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """End-of-fit evaluation: held-out random presets (test split) and factory presets, each
    re-rendered through the real plugin; model vs mean preset vs nearest neighbour. Uses
    ``renderer`` (an entered :class:`EngineRenderer`) or opens its own."""
    t0 = time.perf_counter()
    layout = predictor.layout
    train, lookup = dataset.train, dataset.lookup
    lookup_emb = logmel_embeddings(lookup.audio, cfg.data.sample_rate)
    mean = mean_preset(layout, train.normalized)
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if renderer is None:
            renderer = stack.enter_context(EngineRenderer(cfg.data))
        n = cfg.eval.n_random
        test = dataset.test
        out["random"] = evaluate_targets(predictor, renderer, test.audio[:n].astype(np.float32),
                                         test.normalized[:n], lookup.normalized, lookup_emb, mean, log, "random")
        if cfg.eval.n_factory > 0:
            names, factory = factory_eval_presets(cfg.data, cfg.eval.n_factory)
            factory_audio, ok = renderer.render(factory)
            if not ok.all():
                log(f"[eval] {int((~ok).sum())} factory preset(s) failed to render and are skipped: "
                    f"{[nm for nm, k in zip(names, ok) if not k][:5]}")
            out["factory"] = evaluate_targets(predictor, renderer, factory_audio[ok], factory[ok],
                                              lookup.normalized, lookup_emb, mean, log, "factory")
    methods = [m for m in METHODS if any(m in v for v in out.values())]
    result = {"eval": out, "eval_methods": {m: METHOD_NOTES[m] for m in methods},
              "timing": {"eval_s": time.perf_counter() - t0}}
    unavailable = unavailable_methods(cfg)
    if unavailable:
        result["eval_unavailable"] = unavailable
        for name, why in unavailable.items():
            log(f"[eval] {name}: not available ({why})")
    return result


def unavailable_methods(cfg: Config) -> dict[str, str]:
    """Methods the run's synth cannot use, with the reason (a synth without a proxy)."""
    synth = synth_of(cfg.data)
    if synth.has_proxy:
        return {}
    why = f"{synth.name} has no differentiable proxy"
    return {name: why for name in PROXY_METHODS}


def format_table(summary: dict[str, Any]) -> str:
    """A short text table of ``summary["eval"]`` (lower is better except cat_acc)."""
    lines = [f"{'set':<8} {'method':<18} {'mss':>8} {'logmel_l1':>10} {'mfcc_l1':>9} {'param_mae':>10} "
             f"{'cat_acc':>8} {'n':>5}"]
    for set_name, methods in summary["eval"].items():
        for method, m in methods.items():
            lines.append(f"{set_name:<8} {method:<18} {m.get('mss', float('nan')):8.4f} "
                         f"{m.get('logmel_l1', float('nan')):10.3f} {m.get('mfcc_l1', float('nan')):9.3f} "
                         f"{m.get('param_mae', float('nan')):10.4f} {m.get('cat_acc', float('nan')):8.3f} "
                         f"{m.get('n', 0):5d}")
    lines += [f"  {name}: {note}" for name, note in summary.get("eval_methods", {}).items()]
    return "\n".join(lines)
