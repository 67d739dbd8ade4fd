"""Encoders (Flax linen): audio features -> a preset prediction.

* :class:`MelCNN` (default): 2-D CNN over a log-mel spectrogram [B, frames, mels].
* :class:`MfccLSTM`: stacked LSTM over MFCC frames [B, frames, n_mfcc] (deepDIVA, RenderMan).
* :class:`RawCNN`: end-to-end on the waveform [B, n_samples] (InverSynth): strided 1-D
  convolutions learn a spectrogram-like front end [B, frames, filters], then 2-D convolutions.

All are told the note they hear (``note`` [B, 2]: :func:`training.heads.note_features` of the MIDI
pitch and velocity), joined to the audio features before the last dense layer, and end in
:class:`Heads`, whose sizes come from a :class:`training.heads.HeadLayout` and whose kind is
``model.head`` (``training.heads``: one preset, ordinal bins, or a mixture of presets).
There are no normalisation layers (per-example ones would hide loudness; batch statistics would
be state), so a model is a pure function of its parameters; inputs are standardised instead.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from training.config import ModelConfig
from training.heads import HeadLayout, Prediction, head_outputs, head_width


class Heads(nn.Module):
    """Hidden features [B, H] -> a prediction of kind ``head`` (:func:`training.heads.head_outputs`):
    always ``{"continuous": [B, n_continuous] in [0, 1], "logits": ([B, k], ...)}`` (the one
    preset), plus the many answers of the ``bins`` and ``mixture`` kinds."""

    layout: HeadLayout
    head: str = "regression"
    bins: int = 16
    hypotheses: int = 8

    @nn.compact
    def __call__(self, h: jax.Array) -> Prediction:
        n_out = head_width(self.layout, self.head, self.bins, self.hypotheses)
        out = nn.Dense(n_out, name="out", kernel_init=nn.initializers.lecun_normal(),
                       bias_init=nn.initializers.zeros)(h)
        return head_outputs(self.layout, self.head, self.bins, self.hypotheses, out)


class ConvBlock2D(nn.Module):
    """3x3 conv -> ReLU -> 2x2 max-pool, on [B, H, W, C].

    No per-example normalisation layer: GroupNorm / LayerNorm would remove each sound's overall
    level, and loudness (master volume, envelopes, velocity) is part of what must be predicted.
    """

    channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.channels, (3, 3), padding="SAME")(x)
        x = nn.relu(x)
        return nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")


class ConvStack2D(nn.Module):
    channels: Sequence[int]
    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array, note: jax.Array) -> jax.Array:
        """[B, H, W] and the note [B, 2] -> hidden features [B, hidden]."""
        x = x[..., None]
        for c in self.channels:
            x = ConvBlock2D(c)(x)
        x = jnp.concatenate([x.reshape((x.shape[0], -1)), note.astype(x.dtype)], axis=-1)
        return nn.relu(nn.Dense(self.hidden)(x))


class MelCNN(nn.Module):
    """Log-mel spectrogram [B, frames, mels] and note [B, 2] -> prediction."""

    channels: Sequence[int]
    hidden: int
    heads: Heads

    @nn.compact
    def __call__(self, features: jax.Array, note: jax.Array) -> Prediction:
        h = ConvStack2D(tuple(self.channels), self.hidden)(features, note)
        return self.heads(h)


class MfccLSTM(nn.Module):
    """MFCC frames [B, frames, n_mfcc] -> stacked LSTM -> last output -> dense -> prediction."""

    lstm_hidden: int
    lstm_layers: int
    hidden: int
    heads: Heads

    @nn.compact
    def __call__(self, features: jax.Array, note: jax.Array) -> Prediction:
        x = features
        for _ in range(self.lstm_layers):
            x = nn.RNN(nn.OptimizedLSTMCell(self.lstm_hidden))(x)
        h = nn.relu(nn.Dense(self.hidden)(jnp.concatenate([x[:, -1], note.astype(x.dtype)], axis=-1)))
        return self.heads(h)


class RawCNN(nn.Module):
    """Waveform [B, n_samples] -> strided 1-D conv front end -> 2-D CNN -> prediction."""

    raw_filters: int
    raw_kernel: int
    raw_stride: int
    channels: Sequence[int]
    hidden: int
    heads: Heads

    @nn.compact
    def __call__(self, audio: jax.Array, note: jax.Array) -> Prediction:
        x = audio[..., None]  # [B, T, 1]
        x = nn.Conv(self.raw_filters, (self.raw_kernel,), strides=(self.raw_stride,), padding="VALID")(x)
        x = jnp.log1p(jnp.abs(x))  # compressive, like a log-magnitude spectrogram
        x = nn.relu(nn.Conv(self.raw_filters, (8,), strides=(4,), padding="SAME")(x))  # [B, frames, filters]
        h = ConvStack2D(tuple(self.channels), self.hidden)(x, note)
        return self.heads(h)


@functools.lru_cache(maxsize=16)
def make_model(cfg: ModelConfig, layout: HeadLayout) -> nn.Module:
    """The encoder named by ``model.kind``, with the heads named by ``model.head``."""
    heads = Heads(layout, cfg.head, cfg.bins, cfg.hypotheses)
    if cfg.kind == "cnn":
        return MelCNN(cfg.channels, cfg.hidden, heads)
    if cfg.kind == "lstm":
        return MfccLSTM(cfg.lstm_hidden, cfg.lstm_layers, cfg.hidden, heads)
    if cfg.kind == "rawcnn":
        return RawCNN(cfg.raw_filters, cfg.raw_kernel, cfg.raw_stride, cfg.channels, cfg.hidden, heads)
    raise ValueError(f"model.kind: expected one of 'cnn', 'lstm', 'rawcnn', got {cfg.kind!r}")
