"""Encoders (Flax linen): audio features -> a preset prediction.

* :class:`MelCNN` (default): 2-D CNN over a log-mel spectrogram [B, frames, mels].
* :class:`MfccLSTM`: stacked LSTM over MFCC frames [B, frames, n_mfcc] (deepDIVA, RenderMan).
* :class:`RawCNN`: end-to-end on the waveform [B, n_samples] (InverSynth): strided 1-D
  convolutions learn a spectrogram-like front end [B, frames, filters], then 2-D convolutions.

All end in :class:`Heads`, whose sizes come from a :class:`training.heads.HeadLayout`: a sigmoid
output per continuous learned parameter and a softmax (returned as logits) per categorical one.
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
from training.heads import HeadLayout, Prediction


class Heads(nn.Module):
    """Hidden features [B, H] -> ``{"continuous": [B, n_continuous] in (0, 1), "logits": ([B, k], ...)}``."""

    n_continuous: int
    n_choices: tuple[int, ...]

    @nn.compact
    def __call__(self, h: jax.Array) -> Prediction:
        n_out = self.n_continuous + sum(self.n_choices)
        out = nn.Dense(n_out, name="out", kernel_init=nn.initializers.lecun_normal(),
                       bias_init=nn.initializers.zeros)(h)
        continuous = nn.sigmoid(out[:, :self.n_continuous])
        logits, start = [], self.n_continuous
        for k in self.n_choices:
            logits.append(out[:, start:start + k])
            start += k
        return {"continuous": continuous, "logits": tuple(logits)}


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
    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, H, W] -> hidden features [B, hidden]."""
        x = x[..., None]
        for c in self.channels:
            x = ConvBlock2D(c)(x)
        x = x.reshape((x.shape[0], -1))
        return nn.relu(nn.Dense(self.hidden)(x))


class MelCNN(nn.Module):
    """Log-mel spectrogram [B, frames, mels] -> prediction."""

    channels: Sequence[int]
    hidden: int
    layout: HeadLayout

    @nn.compact
    def __call__(self, features: jax.Array) -> Prediction:
        h = ConvStack2D(tuple(self.channels), self.hidden)(features)
        return Heads(self.layout.n_continuous, self.layout.n_choices)(h)


class MfccLSTM(nn.Module):
    """MFCC frames [B, frames, n_mfcc] -> stacked LSTM -> last output -> dense -> prediction."""

    lstm_hidden: int
    lstm_layers: int
    hidden: int
    layout: HeadLayout

    @nn.compact
    def __call__(self, features: jax.Array) -> Prediction:
        x = features
        for _ in range(self.lstm_layers):
            x = nn.RNN(nn.OptimizedLSTMCell(self.lstm_hidden))(x)
        h = nn.relu(nn.Dense(self.hidden)(x[:, -1]))
        return Heads(self.layout.n_continuous, self.layout.n_choices)(h)


class RawCNN(nn.Module):
    """Waveform [B, n_samples] -> strided 1-D conv front end -> 2-D CNN -> prediction."""

    raw_filters: int
    raw_kernel: int
    raw_stride: int
    channels: Sequence[int]
    hidden: int
    layout: HeadLayout

    @nn.compact
    def __call__(self, audio: jax.Array) -> Prediction:
        x = audio[..., None]  # [B, T, 1]
        x = nn.Conv(self.raw_filters, (self.raw_kernel,), strides=(self.raw_stride,), padding="VALID")(x)
        x = jnp.log1p(jnp.abs(x))  # compressive, like a log-magnitude spectrogram
        x = nn.relu(nn.Conv(self.raw_filters, (8,), strides=(4,), padding="SAME")(x))  # [B, frames, filters]
        h = ConvStack2D(tuple(self.channels), self.hidden)(x)
        return Heads(self.layout.n_continuous, self.layout.n_choices)(h)


@functools.lru_cache(maxsize=16)
def make_model(cfg: ModelConfig, layout: HeadLayout) -> nn.Module:
    """The encoder named by ``model.kind``."""
    if cfg.kind == "cnn":
        return MelCNN(cfg.channels, cfg.hidden, layout)
    if cfg.kind == "lstm":
        return MfccLSTM(cfg.lstm_hidden, cfg.lstm_layers, cfg.hidden, layout)
    if cfg.kind == "rawcnn":
        return RawCNN(cfg.raw_filters, cfg.raw_kernel, cfg.raw_stride, cfg.channels, cfg.hidden, layout)
    raise ValueError(f"model.kind: expected one of 'cnn', 'lstm', 'rawcnn', got {cfg.kind!r}")
