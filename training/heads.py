"""Output heads derived from the parameter description, and the maps between a network's
prediction and full normalized presets.

Learned parameters are those with a non-``fixed`` prior that are not frozen by the data config.
Continuous ones get a bounded output (sigmoid, normalized [0, 1]); each categorical one gets a
softmax over its choices. Everything else takes the base preset's value (the spec default, or
the frozen value).

A prediction is a dict ``{"continuous": [B, n_continuous] in (0, 1), "logits": (per categorical
parameter: [B, n_choices])}``.
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
