"""Improving a batch of predicted presets through the proxy alone: a guided random search.

The encoder's prediction is the start. Each round draws ``candidates`` presets per target around
the current best one: every continuous learned parameter moves by Gaussian noise of ``sigma``
(normalized units; ``sigma`` halves each round), every categorical one keeps its choice with
probability 1/2 and is otherwise drawn from the encoder's softmax for that target. All candidates
are rendered by the JAX proxy (forward only: no gradient, no real plugin, no training data) and a
candidate replaces the best when its multi-resolution STFT distance to the target is lower, so
the result is never further from the target than the start *in the proxy*. What it is worth is
measured by re-rendering through the real plugin (``training.evaluate_core``).

Its cost: for many targets at once a forward render costs about 3.5 ms per sound on 2 idle CPU
cores (``benchmarks.train``, batch 128, the batch split over both cores; 7.4 ms on one), and the
forward pass compiles in about 20 s. At the same count of proxy renders, gradient descent through
the proxy (``training.refine.ProxyRefiner.descend``, the evaluation's ``model+proxy_refine``) now
does better, at about 2-3x the time: on the default run's 256 held-out targets 48 renders after
the best of 16 give 1.402 random / 1.307 factory re-rendered mss here, 1.293 / 1.110 as descent
steps (README, training section).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from training.config import DataConfig
from training.heads import HeadLayout, sample_choices


@dataclass(frozen=True)
class ProxySearchResult:
    """Outcome of :func:`proxy_search` for N targets.

    Attributes:
        presets: best presets found [N, n_params] (normalized, snapped to the plugin's grid).
        proxy_distance: their proxy multi-resolution STFT distance to the targets [N].
        start_distance: the same for the start presets [N].
        renders_per_target: proxy renders spent per target (the start's included unless its distance was given).
        seconds: wall time (the proxy's compilation included on first use).
    """

    presets: np.ndarray
    proxy_distance: np.ndarray
    start_distance: np.ndarray
    renders_per_target: int
    seconds: float


@functools.lru_cache(maxsize=8)
def _distance_fn(data: DataConfig) -> Callable[..., jax.Array]:
    """``f(normalized [B, n_params], target [B, C, T], key, pitch [B], velocity [B]) -> [B]``: proxy
    render, then the multi-resolution STFT distance of the evaluation (each channel scored, then
    averaged). ``data`` is note-independent (pitch and velocity are traced: one compilation). The
    rows are split over the local devices (:func:`diffsynth.parallel.batch_parallel`: on CPU one
    per core)."""
    from diffsynth.losses import multi_resolution_stft_loss
    from diffsynth.parallel import batch_parallel
    from training.proxy_loss import make_proxy_render

    render = make_proxy_render(data)

    def f(normalized: jax.Array, target: jax.Array, key: jax.Array, pitch: jax.Array,
          velocity: jax.Array) -> jax.Array:
        audio = render(normalized, None, key, pitch, velocity)
        return multi_resolution_stft_loss(audio, target).mean(axis=-1)

    return jax.jit(batch_parallel(f, (True, True, False, True, True)))


def proxy_distances(data: DataConfig, presets: np.ndarray, target_audio: np.ndarray, seed: int = 0,
                    batch_size: int = 128, progress: str | None = None) -> np.ndarray:
    """Proxy multi-resolution STFT distance [M] of ``presets`` [M, n_params] (normalized)
    against ``target_audio`` [M, C, T], rendered ``batch_size`` at a time (one compiled shape;
    ``benchmarks.train``, 16 kHz, 1 s, both cores: medians 3.5 / 3.7 / 3.3 ms per sound at 64 / 128 /
    256, against 8.2 / 7.4 / 8.6 on one device)."""
    from training.proxy_loss import canonical_note

    fn = _distance_fn(canonical_note(data))
    pitch = jnp.full((batch_size,), int(data.note), jnp.int32)
    velocity = jnp.full((batch_size,), int(data.velocity), jnp.int32)
    presets = np.asarray(presets, np.float32)
    target_audio = np.asarray(target_audio, np.float32)
    out = np.empty(len(presets), np.float64)
    from tqdm import tqdm

    # on a terminal only (disable=None): in a log file, e.g. ``fit --no-progress``, the lines stay readable
    bar = tqdm(total=len(presets), unit="render", desc=progress, leave=False,
               disable=True if progress is None or len(presets) <= batch_size else None, dynamic_ncols=True)
    for a in range(0, len(presets), batch_size):
        n = min(batch_size, len(presets) - a)
        x = np.pad(presets[a:a + n], ((0, batch_size - n), (0, 0)))
        t = np.pad(target_audio[a:a + n], ((0, batch_size - n), (0, 0), (0, 0)))
        key = jax.random.fold_in(jax.random.key(seed), a)  # the proxy's noise sources
        out[a:a + n] = np.asarray(fn(jnp.asarray(x), jnp.asarray(t), key, pitch, velocity))[:n]
        bar.update(n)
    bar.close()
    return out


@dataclass(frozen=True)
class BestOfK:
    """Outcome of :func:`best_of_k`: the picked presets [N, n_params], their proxy distance [N],
    all distances [N, k] (the pick: their argmin), wall time."""

    presets: np.ndarray
    proxy_distance: np.ndarray
    distances: np.ndarray
    seconds: float


def best_of_k(data: DataConfig, candidates: np.ndarray, target_audio: np.ndarray, seed: int = 0,
              batch_size: int = 128, progress: str | None = "proxy: rank candidates") -> BestOfK:
    """Each target's candidate [N, k, n_params] whose proxy render (``data``'s note, velocity,
    length) is nearest to ``target_audio`` [N, C, T]: N x k proxy renders, no real engine."""
    t0 = time.perf_counter()
    candidates = np.asarray(candidates, np.float64)
    n, k = candidates.shape[:2]
    if len(target_audio) != n:
        raise ValueError(f"best_of_k: {n} candidate sets and {len(target_audio)} targets; expected one set per target")
    rows = np.repeat(np.arange(n), k)
    d = proxy_distances(data, candidates.reshape(n * k, -1), np.asarray(target_audio, np.float32)[rows], seed,
                        batch_size, progress).reshape(n, k)
    d = np.where(np.isfinite(d), d, np.inf)
    pick = d.argmin(axis=1)
    return BestOfK(candidates[np.arange(n), pick], d[np.arange(n), pick], d, time.perf_counter() - t0)


def proxy_search(data: DataConfig, layout: HeadLayout, start: np.ndarray, probs: Sequence[np.ndarray],
                 target_audio: np.ndarray, *, rounds: int = 4, candidates: int = 16, sigma: float = 0.25,
                 seed: int = 0, batch_size: int = 128, start_distance: np.ndarray | None = None,
                 mutations: int = 0) -> ProxySearchResult:
    """Search around ``start`` [N, n_params] (normalized) for presets whose proxy render is
    closer to ``target_audio`` [N, C, T] (rendered with ``data``'s note, velocity and length).

    ``probs`` holds, per categorical learned parameter of ``layout`` (in its order), the
    encoder's choice probabilities [N, n_choices]. ``start_distance`` [N]: the start's proxy
    distance when already known (saves its render). ``mutations`` > 0: each candidate changes
    about that many learned parameters (each with probability mutations / n_learned, at least
    one) instead of every continuous one and half the categorical ones. Deterministic for a
    given ``seed``.
    """
    t0 = time.perf_counter()
    spec = layout.spec
    start = np.asarray(spec.snap_normalized(np.asarray(start, np.float64)), np.float64)
    target_audio = np.asarray(target_audio, np.float32)
    n = len(start)
    if target_audio.shape[0] != n or len(probs) != len(layout.categorical):
        raise ValueError(f"proxy_search: {n} start presets, {target_audio.shape[0]} targets and "
                         f"{len(probs)} probability tables for {len(layout.categorical)} categorical "
                         "parameters; expected one target per preset and one table per categorical parameter")
    if rounds < 0 or candidates < 1 or not sigma > 0:
        raise ValueError(f"proxy_search: expected rounds >= 0, candidates >= 1, sigma > 0; got "
                         f"{rounds}, {candidates}, {sigma}")
    rng = np.random.default_rng(seed)
    cont = np.asarray(layout.continuous, dtype=np.int64)
    cat = np.asarray(layout.categorical, dtype=np.int64)
    best = start.copy()
    best_d = start_d = (proxy_distances(data, start, target_audio, seed, batch_size) if start_distance is None
                        else np.asarray(start_distance, np.float64))
    rows = np.repeat(np.arange(n), candidates)
    n_learned = len(cont) + len(cat)
    for r in range(rounds):
        cand = best[rows].copy()  # [N * candidates, n_params], grouped by target
        step = sigma / 2 ** r
        if mutations > 0:
            change = rng.random((len(cand), n_learned)) < min(1.0, mutations / max(n_learned, 1))
            change[np.arange(len(cand)), rng.integers(0, n_learned, len(cand))] = True  # at least one
        else:
            change = np.concatenate([np.ones((len(cand), len(cont)), bool), rng.random((len(cand), len(cat))) < 0.5],
                                    axis=1)
        if len(cont):
            moved = np.clip(cand[:, cont] + step * rng.standard_normal((len(cand), len(cont))), 0.0, 1.0)
            cand[:, cont] = np.where(change[:, :len(cont)], moved, cand[:, cont])
        for j, (i, k) in enumerate(zip(cat, layout.n_choices)):
            redraw = change[:, len(cont) + j]
            drawn = sample_choices(rng, np.asarray(probs[j], np.float64)[rows])
            cand[redraw, i] = drawn[redraw] / (k - 1)
        cand = np.asarray(spec.snap_normalized(cand), np.float64)
        d = proxy_distances(data, cand, target_audio[rows], seed + r + 1, batch_size,
                            f"proxy search: round {r + 1}/{rounds}").reshape(n, candidates)
        pick = d.argmin(axis=1)
        d_pick = d[np.arange(n), pick]
        better = d_pick < best_d
        best = np.where(better[:, None], cand.reshape(n, candidates, -1)[np.arange(n), pick], best)
        best_d = np.where(better, d_pick, best_d)
    return ProxySearchResult(best, best_d, start_d, (start_distance is None) + rounds * candidates,
                             time.perf_counter() - t0)
