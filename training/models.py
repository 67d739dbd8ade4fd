"""Encoders (Flax linen): audio features -> a preset prediction.

* :class:`MelCNN` (default): 2-D CNN over a log-mel spectrogram [B, frames, mels].
* :class:`MfccLSTM`: stacked LSTM over MFCC frames [B, frames, n_mfcc] (deepDIVA, RenderMan).
* :class:`RawCNN`: end-to-end on the waveform [B, n_samples] (InverSynth): strided 1-D
  convolutions learn a spectrogram-like front end [B, frames, filters], then 2-D convolutions.

All are told the note they hear (``note`` [B, 2]: :func:`training.heads.note_features` of the MIDI
pitch and velocity), joined to the audio features before the last dense layer, and end in
:class:`Heads`, whose sizes come from a :class:`training.heads.HeadLayout` and whose kind is
``model.head`` (``training.heads``: one preset, ordinal bins, a mixture of presets, or a flow).
There are no normalisation layers (per-example ones would hide loudness; batch statistics would
be state), so a model is a pure function of its parameters; inputs are standardised instead.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from training.config import ModelConfig
from training.heads import (HeadLayout, Prediction, _split_logits, flow_time_features, flow_times, from_flow_space,
                            head_outputs, head_width)


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


class FlowHeads(nn.Module):
    """Hidden features [B, H] -> a distribution of whole presets (``model.head = "flow"``).

    * ``velocity(h, y, t)``: the velocity field [..., n_continuous] of a conditional rectified flow
      at points ``y`` [..., n] (flow space, ``heads.to_flow_space``) and times ``t`` [...]; ``h``
      broadcasts over the leading draw axes ([B, H] against [B, D, n]).
    * ``decode(h, continuous)``: the categorical logits (tuple of [..., k]) given the continuous
      values [..., n] in [0, 1] (teacher-forced with the true values in training).
    * ``sample(h, y0)``: Euler integration of the flow from noise ``y0`` [B, D, n] over
      ``steps`` steps -> continuous [B, D, n] in [0, 1], and their decoded logits.
    * ``__call__(h)``: the one preset (the flow from y0 = 0, decoded) and ``"flow_h"``.
    """

    layout: HeadLayout
    hidden: int = 256
    steps: int = 16

    def setup(self) -> None:
        n = self.layout.n_continuous
        init = nn.initializers.lecun_normal()
        self.v_in = nn.Dense(self.hidden, kernel_init=init)
        self.v_mid = nn.Dense(self.hidden, kernel_init=init)
        # zero-initialised: the untrained flow is the identity map of its noise
        self.v_out = nn.Dense(n, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros)
        self.c_in = nn.Dense(self.hidden, kernel_init=init)
        self.c_out = nn.Dense(max(sum(self.layout.n_choices), 1), kernel_init=init, bias_init=nn.initializers.zeros)

    def velocity(self, h: jax.Array, y: jax.Array, t: jax.Array) -> jax.Array:
        x = jnp.concatenate([y, flow_time_features(t), _per_draw(h, y)], axis=-1)
        x = nn.silu(self.v_in(x))
        x = nn.silu(self.v_mid(x))
        return self.v_out(x)

    def decode(self, h: jax.Array, continuous: jax.Array) -> tuple[jax.Array, ...]:
        x = nn.silu(self.c_in(jnp.concatenate([continuous, _per_draw(h, continuous)], axis=-1)))
        return _split_logits(self.c_out(x), self.layout.n_choices)

    def sample(self, h: jax.Array, y0: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        y, dt = y0, 1.0 / self.steps
        for t0 in flow_times(self.steps):  # unrolled: a few small dense layers per step
            y = y + dt * self.velocity(h, y, jnp.full(y.shape[:-1], t0, jnp.float32))
        continuous = from_flow_space(y)
        return continuous, self.decode(h, continuous)

    def __call__(self, h: jax.Array) -> Prediction:
        cont, logits = self.sample(h, jnp.zeros((h.shape[0], 1, self.layout.n_continuous), h.dtype))
        return {"continuous": cont[:, 0], "logits": tuple(l[:, 0] for l in logits), "flow_h": h}


def _per_draw(h: jax.Array, like: jax.Array) -> jax.Array:
    """Features [B, H] repeated over the draw axes of ``like`` [B, ..., n] -> [B, ..., H]."""
    return jnp.broadcast_to(h.reshape(h.shape[:1] + (1,) * (like.ndim - 2) + h.shape[1:]), like.shape[:-1] + h.shape[-1:])


def flow_method(name: str) -> Callable:
    """``method=`` for ``model.apply`` that calls ``FlowHeads.<name>`` of any encoder here."""
    return lambda module, *args: getattr(module.heads, name)(*args)


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
    heads: nn.Module  # Heads or FlowHeads

    @nn.compact
    def __call__(self, features: jax.Array, note: jax.Array) -> Prediction:
        h = ConvStack2D(tuple(self.channels), self.hidden)(features, note)
        return self.heads(h)


class MfccLSTM(nn.Module):
    """MFCC frames [B, frames, n_mfcc] -> stacked LSTM -> last output -> dense -> prediction."""

    lstm_hidden: int
    lstm_layers: int
    hidden: int
    heads: nn.Module  # Heads or FlowHeads

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
    heads: nn.Module  # Heads or FlowHeads

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
    heads = FlowHeads(layout, cfg.flow_hidden, cfg.flow_steps) if cfg.head == "flow" else \
        Heads(layout, cfg.head, cfg.bins, cfg.hypotheses)
    if cfg.kind == "cnn":
        return MelCNN(cfg.channels, cfg.hidden, heads)
    if cfg.kind == "lstm":
        return MfccLSTM(cfg.lstm_hidden, cfg.lstm_layers, cfg.hidden, heads)
    if cfg.kind == "rawcnn":
        return RawCNN(cfg.raw_filters, cfg.raw_kernel, cfg.raw_stride, cfg.channels, cfg.hidden, heads)
    raise ValueError(f"model.kind: expected one of 'cnn', 'lstm', 'rawcnn', got {cfg.kind!r}")
