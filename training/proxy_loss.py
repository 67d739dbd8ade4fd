"""The spectral loss's two ingredients, bound to a config: the proxy render and the distance.

* :func:`make_proxy_render`: ``render_fn(normalized [B, n_params], probs, key) -> [B, 2, T]``,
  the differentiable proxy of the synth in relaxed mode (categoricals as probability mixtures),
  playing the same note as the dataset's real-plugin renders.
* :func:`make_distance_fn`: ``distance_fn(audio, target) -> scalar``, the batch mean of the
  multi-resolution STFT distance (linear + log magnitude) at ``loss.fft_sizes``.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from training.config import DataConfig, LossConfig


@functools.lru_cache(maxsize=8)
def make_proxy_render(data: DataConfig) -> Callable[[jax.Array, dict, jax.Array], jax.Array]:
    """The synth's proxy, rendering ``data``'s note for ``data.duration_s`` seconds."""
    if data.synth != "amsynth":
        raise ValueError(f"no proxy for synth {data.synth!r}; expected one of: amsynth")
    from proxies.amsynth.calibration import ProxyConfig, render_normalized

    config = ProxyConfig(sample_rate=data.sample_rate, duration_s=data.duration_s, note=data.note,
                         velocity=data.velocity, hold_s=data.hold_s)
    if config.n_samples != data.n_samples:
        raise ValueError(f"proxy renders {config.n_samples} samples, the dataset {data.n_samples}; expected equal "
                         "lengths (report this: the two derive n_samples differently)")

    def render_fn(normalized: jax.Array, probs: dict[str, jax.Array], key: jax.Array) -> jax.Array:
        return render_normalized(normalized, config, probs=probs, key=key)

    return render_fn


@functools.lru_cache(maxsize=8)
def make_distance_fn(loss: LossConfig) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Batch-mean multi-resolution STFT distance of [B, 2, T] audio at ``loss.fft_sizes``."""
    from diffsynth.losses import multi_resolution_stft_loss

    sizes = tuple(loss.fft_sizes)

    def distance_fn(audio: jax.Array, target: jax.Array) -> jax.Array:
        return jnp.mean(multi_resolution_stft_loss(audio, target, fft_sizes=sizes))

    return distance_fn
