"""Output heads derived from the parameter description, and the maps between a network's
prediction and full normalized presets.

Learned parameters are those with a non-``fixed`` prior that are not frozen by the data config.
Continuous ones get a bounded output (sigmoid, normalized [0, 1]); each categorical one gets a
softmax over its choices. Everything else takes the base preset's value (the spec default, or
the frozen value).

A prediction is a dict ``{"continuous": [B, n_continuous] in [0, 1], "logits": (per categorical
parameter: [B, n_choices])}``: the one preset the network answers with. Heads that represent many
answers (``model.head``) add their distribution:

* ``regression``: nothing more (a sigmoid per continuous parameter; the mean of the presets
  that sound alike, which may sound like none of them).
* ``bins``: ``"bins"`` [B, n_continuous, n_bins], logits over ``n_bins`` ordinal values per
  continuous parameter (:data:`bin_centers`, 0..1). Its one preset takes, per parameter, the
  softmax-weighted mean of the most probable bin and its two neighbours (a mode, not the mean of
  the modes); candidates are drawn from the bins (:func:`candidate_presets`).
* ``mixture``: ``"hyp_continuous"`` [B, K, n_continuous], ``"hyp_logits"`` (per categorical:
  [B, K, k]) and ``"hyp_score"`` [B, K]: K whole presets, trained winner-takes-all, and which
  of them the network believes in; its one preset is the best-scored hypothesis.
* ``flow``: ``"flow_h"`` [B, H], the features that condition a distribution of whole presets
  (``training.models.FlowHeads``): conditional flow matching (rectified flow) carries Gaussian
  noise to the continuous parameters (mapped to [-1, 1]); a categorical decoder gives each
  categorical's softmax from the features *and the continuous values drawn*, so choices follow the
  continuous answer they belong to. Its one preset integrates the flow from the noise's mean (0)
  with its categoricals' argmax; candidates integrate it from noise draws (:func:`flow_times`,
  :func:`flow_pairs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from proxies.params import SynthSpec

Prediction = dict[str, Any]


@dataclass(frozen=True)
class HeadLayout:
    """Which plugin parameters the model predicts, and how.

    Attributes:
        spec: the synth's parameter description.
        continuous: plugin indices of the continuous learned parameters (sigmoid head).
        categorical: plugin indices of the categorical learned parameters (softmax heads).
        n_choices: number of choices of each categorical learned parameter.
        base_normalized: [n_params] values of the parameters that are not predicted.
    """

    spec: SynthSpec
    continuous: tuple[int, ...]
    categorical: tuple[int, ...]
    n_choices: tuple[int, ...]
    base_normalized: tuple[float, ...]

    @property
    def n_continuous(self) -> int:
        return len(self.continuous)

    @property
    def categorical_names(self) -> tuple[str, ...]:
        return tuple(self.spec.params[i].name for i in self.categorical)

    @property
    def learned(self) -> tuple[int, ...]:
        return tuple(sorted(self.continuous + self.categorical))

    def describe(self) -> dict[str, Any]:
        return {
            "continuous": [self.spec.params[i].name for i in self.continuous],
            "categorical": {self.spec.params[i].name: k for i, k in zip(self.categorical, self.n_choices)},
            "not_predicted": {self.spec.params[i].name: self.base_normalized[i]
                              for i in range(self.spec.n_params) if i not in self.learned},
        }


def head_layout(spec: SynthSpec, frozen: Mapping[str, float] | None = None) -> HeadLayout:
    """The :class:`HeadLayout` of ``spec`` with ``frozen`` (name -> normalized) parameters pinned."""
    frozen = dict(frozen or {})
    base = np.asarray(spec.defaults_normalized, dtype=np.float64)
    for name, value in frozen.items():
        base[spec.index_of(name)] = value
    base = np.asarray(spec.snap_normalized(base[None]), dtype=np.float64)[0]
    learned = [i for i in spec.learned_indices if spec.params[i].name not in frozen]
    cat = tuple(i for i in learned if spec.params[i].is_categorical)
    cont = tuple(i for i in learned if not spec.params[i].is_categorical)
    return HeadLayout(spec, cont, cat, tuple(spec.params[i].n_steps + 1 for i in cat), tuple(map(float, base)))


# ------------------------------------------------------------------------- the note heard
def note_features(pitch: Any, velocity: Any, xp: Any = jnp) -> Any:
    """The note a sound plays, as the encoder's extra input [B, 2]: ((pitch - 60) / 24,
    (velocity - 100) / 27) for MIDI pitch and velocity [B] (about unit scale over the keyboard)."""
    pitch = xp.asarray(pitch, dtype=xp.float32)
    velocity = xp.asarray(velocity, dtype=xp.float32)
    return xp.stack([(pitch - 60.0) / 24.0, (velocity - 100.0) / 27.0], axis=-1)


# ------------------------------------------------------------------------- head kinds
#: the kinds whose outputs come from one last dense layer (``models.Heads``); ``flow`` has its own
#: module (``models.FlowHeads``)
HEAD_KINDS = ("regression", "bins", "mixture")


def bin_centers(n_bins: int, xp: Any = jnp) -> Any:
    """The ordinal values [n_bins] of the ``bins`` head: evenly from 0 to 1 (both ends reachable)."""
    return xp.linspace(0.0, 1.0, n_bins, dtype=xp.float32)


def head_width(layout: HeadLayout, head: str, bins: int, hypotheses: int) -> int:
    """Outputs of the last dense layer for a head kind."""
    per_preset = layout.n_continuous + sum(layout.n_choices)
    if head == "regression":
        return per_preset
    if head == "bins":
        return layout.n_continuous * bins + sum(layout.n_choices)
    if head == "mixture":
        return hypotheses * (per_preset + 1)
    raise ValueError(f"model.head: expected one of {', '.join(HEAD_KINDS)}, got {head!r}")


def _split_logits(x: jax.Array, n_choices: tuple[int, ...]) -> tuple[jax.Array, ...]:
    out, start = [], 0
    for k in n_choices:
        out.append(x[..., start:start + k])
        start += k
    return tuple(out)


def bins_point(bin_logits: jax.Array) -> jax.Array:
    """The one value [..., n] of bin logits [..., n, n_bins]: the softmax-weighted mean over the
    most probable bin and its neighbours (differentiable in those logits)."""
    n_bins = bin_logits.shape[-1]
    p = jax.nn.softmax(bin_logits, axis=-1)
    mode = jnp.argmax(bin_logits, axis=-1)[..., None]
    near = (jnp.abs(jnp.arange(n_bins) - mode) <= 1).astype(p.dtype)
    w = p * near
    return jnp.sum(w * bin_centers(n_bins), axis=-1) / jnp.sum(w, axis=-1)


def head_outputs(layout: HeadLayout, head: str, bins: int, hypotheses: int, out: jax.Array) -> Prediction:
    """The prediction dict of a head kind from the last dense layer's output [B, head_width]."""
    nc = layout.n_continuous
    if head == "regression":
        return {"continuous": jax.nn.sigmoid(out[:, :nc]), "logits": _split_logits(out[:, nc:], layout.n_choices)}
    if head == "bins":
        bin_logits = out[:, :nc * bins].reshape(out.shape[0], nc, bins)
        return {"continuous": bins_point(bin_logits), "logits": _split_logits(out[:, nc * bins:], layout.n_choices),
                "bins": bin_logits}
    if head == "mixture":
        b, k = out.shape[0], hypotheses
        score = out[:, -k:]
        hyp = out[:, :-k].reshape(b, k, -1)
        hyp_cont = jax.nn.sigmoid(hyp[..., :nc])
        hyp_logits = _split_logits(hyp[..., nc:], layout.n_choices)
        top = jnp.argmax(score, axis=-1)
        rows = jnp.arange(b)
        return {"continuous": hyp_cont[rows, top], "logits": tuple(l[rows, top] for l in hyp_logits),
                "hyp_continuous": hyp_cont, "hyp_logits": hyp_logits, "hyp_score": score}
    raise ValueError(f"model.head: expected one of {', '.join(HEAD_KINDS)}, got {head!r}")


# ------------------------------------------------------------------------- the flow head
#: draws of (noise, time) per training example in the flow-matching loss (less variance per step)
FLOW_DRAWS = 4


def to_flow_space(continuous: Any) -> Any:
    """Normalized continuous values [0, 1] -> the flow's data space [-1, 1] (unit scale, like its noise)."""
    return 2.0 * continuous - 1.0


def from_flow_space(y: jax.Array) -> jax.Array:
    """The flow's data space -> normalized continuous values, clipped into [0, 1]."""
    return jnp.clip(0.5 * (y + 1.0), 0.0, 1.0)


def flow_time_features(t: jax.Array) -> jax.Array:
    """Time in [0, 1], any shape [...] -> features [..., 9]: t and four sine/cosine pairs."""
    f = jnp.asarray([1.0, 2.0, 4.0, 8.0], jnp.float32) * jnp.pi
    tf = t[..., None] * f
    return jnp.concatenate([t[..., None], jnp.sin(tf), jnp.cos(tf)], axis=-1)


def flow_pairs(target_continuous: jax.Array, key: jax.Array, draws: int = FLOW_DRAWS
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training points of rectified-flow matching for targets [B, n] in [0, 1]:
    ``(y_t [B, D, n], t [B, D], u [B, D, n])``, ``y_t = (1 - t) y0 + t y1`` between noise
    ``y0 ~ N(0, I)`` and the target ``y1`` (flow space), ``u = y1 - y0`` the velocity to learn."""
    b, n = target_continuous.shape
    k_noise, k_t = jax.random.split(key)
    y0 = jax.random.normal(k_noise, (b, draws, n), jnp.float32)
    t = jax.random.uniform(k_t, (b, draws), jnp.float32)
    y1 = to_flow_space(target_continuous)[:, None, :]
    return (1.0 - t[..., None]) * y0 + t[..., None] * y1, t, y1 - y0


def flow_times(steps: int) -> np.ndarray:
    """Start times [steps] of the Euler steps that integrate the flow from t = 0 to 1."""
    return np.arange(steps, dtype=np.float32) / np.float32(steps)


# ------------------------------------------------------------------------- presets -> targets
def targets_from_normalized(layout: HeadLayout, normalized: Any) -> dict[str, Any]:
    """Training targets of presets ``normalized`` [B, n_params]: ``continuous`` [B, n_continuous]
    (float32) and ``choice`` [B, n_categorical] (int32 choice indices)."""
    normalized = jnp.asarray(normalized, dtype=jnp.float32)
    cont = normalized[:, jnp.asarray(layout.continuous, dtype=jnp.int32)] if layout.continuous else \
        jnp.zeros((normalized.shape[0], 0), jnp.float32)
    choice = layout.spec.category_of(normalized, xp=jnp)
    choice = choice[:, jnp.asarray(layout.categorical, dtype=jnp.int32)] if layout.categorical else \
        jnp.zeros((normalized.shape[0], 0), jnp.int32)
    return {"continuous": cont, "choice": choice}


# ---------------------------------------------------------------------- predictions -> presets
def probabilities(prediction: Prediction) -> tuple[jax.Array, ...]:
    """Softmax of every categorical head: a tuple of [B, n_choices]."""
    return tuple(jax.nn.softmax(l, axis=-1) for l in prediction["logits"])


def _place(layout: HeadLayout, continuous: jax.Array, choice_normalized: list[jax.Array]) -> jax.Array:
    batch = continuous.shape[0]
    out = jnp.broadcast_to(jnp.asarray(layout.base_normalized, dtype=jnp.float32), (batch, layout.spec.n_params))
    if layout.continuous:
        out = out.at[:, jnp.asarray(layout.continuous)].set(continuous.astype(jnp.float32))
    if layout.categorical:
        out = out.at[:, jnp.asarray(layout.categorical)].set(jnp.stack(choice_normalized, axis=1))
    return out


def hard_normalized(layout: HeadLayout, prediction: Prediction) -> jax.Array:
    """Presets [B, n_params] to send to the plugin: continuous outputs as they are, each
    categorical at its most probable choice, every other parameter at the base preset."""
    choices = [jnp.argmax(l, axis=-1).astype(jnp.float32) / (k - 1)
               for l, k in zip(prediction["logits"], layout.n_choices)]
    return _place(layout, prediction["continuous"], choices)


def relaxed_inputs(layout: HeadLayout, prediction: Prediction,
                   straight_through: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Inputs of a relaxed proxy render: ``normalized`` [B, n_params] (differentiable in the
    continuous outputs; categoricals at their argmax, without gradient) and ``probs``
    (categorical name -> [B, n_choices], differentiable).

    ``probs`` are the softmax (the proxy renders a probability-weighted mixture of the choices),
    or with ``straight_through`` the one-hot argmax in the forward pass and the softmax's
    gradient in the backward pass: the proxy then renders exactly the choices the plugin will
    get, while the categorical heads still receive the mixture's gradient.
    """
    normalized = hard_normalized(layout, {"continuous": prediction["continuous"],
                                          "logits": tuple(jax.lax.stop_gradient(l) for l in prediction["logits"])})
    probs = probabilities(prediction)
    if straight_through:
        probs = tuple(p + jax.lax.stop_gradient(jax.nn.one_hot(jnp.argmax(p, axis=-1), p.shape[-1], dtype=p.dtype) - p)
                      for p in probs)
    return normalized, dict(zip(layout.categorical_names, probs))


def onehot_prediction(layout: HeadLayout, normalized: Any, confidence: float = 30.0) -> Prediction:
    """A prediction that reproduces presets ``normalized`` (for baselines and tests)."""
    t = targets_from_normalized(layout, normalized)
    logits = tuple(confidence * jax.nn.one_hot(t["choice"][:, j], k)
                   for j, k in enumerate(layout.n_choices))
    return {"continuous": t["continuous"], "logits": logits}


# ---------------------------------------------------------------------- many answers -> candidates
def sample_choices(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One index per row of ``probs`` [..., k] (inverse-CDF sampling)."""
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(probs.shape[:-1] + (1,)) * cdf[..., -1:]
    return np.minimum((cdf < u).sum(axis=-1), probs.shape[-1] - 1)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def candidate_presets(layout: HeadLayout, prediction: Mapping[str, Any], k: int, rng: np.random.Generator,
                      sigma: float = 0.1) -> np.ndarray:
    """``k`` candidate presets per target [B, k, n_params] (normalized, snapped) from a prediction
    (host arrays). Candidate 0 is always the network's one preset; the others represent its many
    answers: drawn from the bins (``bins``), the hypotheses in score order (``mixture``; beyond K,
    Gaussian steps of ``sigma`` around them), the flow's own draws (``flow``: ``"flow_continuous"``
    [B, >= k-1, n] and ``"flow_logits"`` per categorical [B, >= k-1, k_j], made by
    ``evaluate_core.Predictor.candidates``), or Gaussian steps of ``sigma`` around the one preset
    (``regression``). Categoricals other than candidate 0's are drawn from their softmax (a
    mixture hypothesis keeps its own most probable choice; a flow draw samples the decoder's softmax
    for its own continuous values)."""
    spec = layout.spec
    cont0 = np.asarray(prediction["continuous"], np.float64)
    b = cont0.shape[0]
    probs = [_softmax(l) for l in prediction["logits"]]
    cont = np.repeat(cont0[:, None], k, axis=1)  # [B, k, nc]
    choice = np.stack([np.repeat(p.argmax(-1)[:, None], k, axis=1) for p in probs], axis=-1) if probs else         np.zeros((b, k, 0), np.int64)
    if k > 1:
        if probs:
            choice[:, 1:] = np.stack([sample_choices(rng, np.repeat(p[:, None], k - 1, axis=1)) for p in probs],
                                     axis=-1)
        if "bins" in prediction:
            pb = _softmax(prediction["bins"])  # [B, nc, n_bins]
            n_bins = pb.shape[-1]
            drawn = sample_choices(rng, np.repeat(pb[:, None], k - 1, axis=1))  # [B, k-1, nc]
            jitter = (rng.random(drawn.shape) - 0.5) / (n_bins - 1)
            cont[:, 1:] = np.clip(np.asarray(bin_centers(n_bins, np))[drawn] + jitter, 0.0, 1.0)
        elif "flow_continuous" in prediction:
            cont[:, 1:] = np.clip(np.asarray(prediction["flow_continuous"], np.float64)[:, :k - 1], 0.0, 1.0)
            if probs:
                choice[:, 1:] = np.stack([sample_choices(rng, _softmax(np.asarray(l)[:, :k - 1]))
                                          for l in prediction["flow_logits"]], axis=-1)
        elif "hyp_score" in prediction:
            order = np.argsort(-np.asarray(prediction["hyp_score"]), axis=-1, kind="stable")  # [B, K]
            hyp_cont = np.asarray(prediction["hyp_continuous"], np.float64)
            hyp_choice = [np.asarray(l).argmax(-1) for l in prediction["hyp_logits"]]  # each [B, K]
            n_hyp = order.shape[1]
            rows = np.arange(b)[:, None]
            pick = order[:, np.arange(k) % n_hyp]  # [B, k]: hypotheses in score order, repeated
            cont = hyp_cont[rows, pick]
            if probs:
                choice = np.stack([h[rows, pick] for h in hyp_choice], axis=-1)
            extra = np.arange(k) >= n_hyp
            cont[:, extra] = np.clip(cont[:, extra] + sigma * rng.standard_normal(cont[:, extra].shape), 0.0, 1.0)
        else:
            cont[:, 1:] = np.clip(cont[:, 1:] + sigma * rng.standard_normal(cont[:, 1:].shape), 0.0, 1.0)
    out = np.broadcast_to(np.asarray(layout.base_normalized, np.float64), (b, k, spec.n_params)).copy()
    if layout.continuous:
        out[..., list(layout.continuous)] = cont
    for j, (i, n_choices) in enumerate(zip(layout.categorical, layout.n_choices)):
        out[..., i] = choice[..., j] / (n_choices - 1)
    return np.asarray(spec.snap_normalized(out.reshape(b * k, -1)), np.float64).reshape(b, k, -1)
