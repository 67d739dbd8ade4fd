"""Network inputs computed in JAX inside the training step (``diffsynth.spectral``, librosa
conventions), from the mono mix of stereo audio [B, C, T]:

* ``logmel``: log-mel power spectrogram in dB (ref = 1, floored at ``-floor_db`` dB),
  time-major ``[B, frames, n_mels]``.
* ``mfcc``: MFCCs of that log-mel spectrogram, ``[B, frames, n_mfcc]``.
* ``raw``: the waveform, ``[B, n_samples]``.

An absolute dB floor (not one relative to each sound's maximum) keeps loudness, which the
master volume and envelopes set, visible to the network. Features are standardised with a
mean and standard deviation fitted on training sounds (:func:`feature_stats`; per mel band /
coefficient, one scalar for raw audio), stored in the train state and checkpointed with it.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffsynth import spectral
from training.config import FeatureConfig

FeatureFn = Callable[[jax.Array], jax.Array]


@functools.lru_cache(maxsize=16)
def make_feature_fn(cfg: FeatureConfig, sample_rate: int) -> FeatureFn:
    """``features(audio [B, C, T] float32) -> [B, frames, bins]`` (or ``[B, T]`` for raw)."""
    amin = 10.0 ** (-cfg.top_db / 10.0)
    mel_kw = dict(n_fft=cfg.n_fft, hop_length=cfg.hop, n_mels=cfg.n_mels, fmin=cfg.f_min_hz, fmax=cfg.f_max_hz)

    def logmel(audio: jax.Array) -> jax.Array:
        mono = audio.mean(axis=1)
        db = spectral.log_mel_spectrogram(mono, sample_rate, ref=1.0, amin=amin, top_db=None, **mel_kw)
        return jnp.swapaxes(db, -1, -2)

    def mfcc(audio: jax.Array) -> jax.Array:
        mono = audio.mean(axis=1)
        c = spectral.mfcc(mono, sample_rate, n_mfcc=cfg.n_mfcc, amin=amin, top_db=None, **mel_kw)
        return jnp.swapaxes(c, -1, -2)

    def raw(audio: jax.Array) -> jax.Array:
        return audio.mean(axis=1)

    return {"logmel": logmel, "mfcc": mfcc, "raw": raw}[cfg.kind]


def feature_stats(feature_fn: FeatureFn, train_audio: np.ndarray, max_sounds: int = 512,
                  batch_size: int = 64) -> tuple[jax.Array, jax.Array]:
    """(mean, std) of the features of up to ``max_sounds`` training sounds (evenly spaced, so
    deterministic): per last-axis bin for spectral features, scalars for raw audio."""
    n = len(train_audio)
    idx = np.linspace(0, n - 1, num=min(n, max_sounds)).round().astype(int)
    fn = jax.jit(feature_fn)
    total = total_sq = 0.0
    count = 0
    raw = None
    for a in range(0, len(idx), batch_size):
        f = fn(jnp.asarray(train_audio[idx[a:a + batch_size]], jnp.float32))
        raw = f.ndim == 2
        axes = tuple(range(f.ndim)) if raw else tuple(range(f.ndim - 1))
        total = total + jnp.sum(f, axis=axes)
        total_sq = total_sq + jnp.sum(jnp.square(f), axis=axes)
        count += int(np.prod([f.shape[i] for i in axes]))
    mean = total / count
    std = jnp.sqrt(jnp.maximum(total_sq / count - mean ** 2, 0.0))
    if raw:
        mean = jnp.zeros_like(mean)  # audio stays zero-centred; only its scale is normalised
        std = jnp.sqrt(total_sq / count)
    return mean.astype(jnp.float32), jnp.maximum(std, 1e-3).astype(jnp.float32)
