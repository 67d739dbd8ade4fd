"""The spectral loss's two ingredients, bound to a config: the proxy render and the distance.

* :func:`make_proxy_render`: ``render_fn(normalized [B, n_params], probs, key, pitch=None,
  velocity=None) -> [B, C, T]``, the synth's differentiable proxy (through the synth contract,
  :func:`proxies.synth.proxy_renderer`) in relaxed mode (categoricals as probability mixtures),
  rendering the dataset's length and note-off. Pitch and velocity are traced ``[B]`` arrays
  (default: the data config's note and velocity), so one compiled proxy serves every note.
* :func:`make_distance_fn`: ``distance_fn(audio, target) -> scalar``, the batch mean of the
  multi-resolution STFT distance (linear + log magnitude) at ``loss.fft_sizes``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from training.config import DataConfig, LossConfig


def canonical_note(data: DataConfig) -> DataConfig:
    """``data`` with note and velocity at their defaults: what compiled proxies are keyed on
    (pitch and velocity are traced arrays, so configs that differ only there share a compilation)."""
    defaults = DataConfig()
    return dataclasses.replace(data, note=defaults.note, velocity=defaults.velocity)


@functools.lru_cache(maxsize=16)
def make_proxy_render(data: DataConfig) -> Callable[..., jax.Array]:
    """The synth's proxy, rendering ``data``'s length and note-off; pitch and velocity default to
    ``data.note`` / ``data.velocity`` (pass ``[B]`` arrays to play other notes)."""
    base = _proxy_render(canonical_note(data))
    default_note, default_velocity = int(data.note), int(data.velocity)

    def render_fn(normalized: jax.Array, probs: dict[str, jax.Array] | None, key: jax.Array,
                  pitch: jax.Array | None = None, velocity: jax.Array | None = None) -> jax.Array:
        b = normalized.shape[0]
        p = jnp.full((b,), default_note, jnp.int32) if pitch is None else \
            jnp.broadcast_to(jnp.asarray(pitch, jnp.int32), (b,))
        v = jnp.full((b,), default_velocity, jnp.int32) if velocity is None else \
            jnp.broadcast_to(jnp.asarray(velocity, jnp.int32), (b,))
        return base(normalized, p, v, probs, key)

    return render_fn


@functools.lru_cache(maxsize=8)
def _proxy_render(data: DataConfig) -> Callable[..., jax.Array]:
    from proxies.synth import ProxyRender, proxy_renderer
    from training.data import synth_of

    synth = synth_of(data)
    config = ProxyRender(sample_rate=data.sample_rate, duration_s=data.duration_s, hold_s=data.hold_s)
    if config.n_samples != data.n_samples:  # both call proxies.synth.render_samples
        raise AssertionError(f"proxy renders {config.n_samples} samples, the dataset {data.n_samples}")
    relaxed = set(synth.proxy().relaxed)
    render = proxy_renderer(synth, config)

    def render_fn(normalized, pitch, velocity, probs, key):
        if probs is not None:  # the heads give every categorical; the proxy relaxes those it models
            probs = {k: p for k, p in probs.items() if k in relaxed}
        return render(normalized, pitch, velocity, probs, key)

    return render_fn


@functools.lru_cache(maxsize=8)
def make_distance_fn(loss: LossConfig) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Batch-mean multi-resolution STFT distance of [B, C, T] audio at ``loss.fft_sizes``."""
    from diffsynth.losses import multi_resolution_stft_loss

    sizes = tuple(loss.fft_sizes)

    def distance_fn(audio: jax.Array, target: jax.Array) -> jax.Array:
        return jnp.mean(multi_resolution_stft_loss(audio, target, fft_sizes=sizes))

    return distance_fn
