"""Training losses: parameter loss, spectral loss through the proxy, and their schedules.

* :func:`param_loss`: MSE on the normalized continuous learned parameters plus
  ``categorical_weight`` x the mean cross-entropy of the categorical heads.
* :func:`spectral_loss`: multi-resolution STFT distance between the proxy's relaxed render of
  the prediction (continuous outputs as they are, categoricals as softmax mixtures) and the
  target audio (real-plugin renders).
* :func:`schedule_weights`: (parameter weight, spectral weight) at a training step for the
  ``param``, ``spectral`` and ``hybrid`` schedules.

Every loss returns ``(loss, aux)`` with ``aux`` a dict of scalars, whatever the flags.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from training.config import LossConfig
from training.heads import HeadLayout, Prediction, bin_centers, flow_pairs, relaxed_inputs

#: ``render_fn(normalized [B, n_params], probs {name: [B, k]}, key) -> audio [B, C, T]``
RenderFn = Callable[[jax.Array, dict[str, jax.Array], jax.Array], jax.Array]
#: ``distance_fn(audio [B, C, T], target [B, C, T]) -> scalar`` (multi-resolution STFT distance)
DistanceFn = Callable[[jax.Array, jax.Array], jax.Array]


#: winner-takes-all relaxation of the mixture head: the other hypotheses share this much weight
MIXTURE_EPSILON = 0.05
#: weight of the mixture head's score (which hypothesis wins) relative to the parameter loss
MIXTURE_SCORE_WEIGHT = 0.1


def _categorical_terms(logits: tuple[jax.Array, ...], choice: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy and accuracy per example and categorical parameter: [..., n_categorical]
    (logits [..., k] each, choice [..., n_categorical] int)."""
    if not logits:
        z = jnp.zeros(choice.shape[:-1] + (0,))
        return z, z
    ce = jnp.stack([optax.softmax_cross_entropy_with_integer_labels(l, choice[..., j])
                    for j, l in enumerate(logits)], axis=-1)
    acc = jnp.stack([(jnp.argmax(l, axis=-1) == choice[..., j]) for j, l in enumerate(logits)], axis=-1)
    return ce, acc.astype(jnp.float32)


def _mean_or(x: jax.Array, empty: float) -> jax.Array:
    return jnp.mean(x) if x.size else jnp.full((), empty)


class FlowFns(NamedTuple):
    """What the ``flow`` head's loss needs besides the prediction: its velocity field and
    categorical decoder bound to the current weights (``models.FlowHeads.velocity`` / ``decode``
    as functions of ``(h, ...)``), and the key of this step's noise and times."""

    velocity: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    decode: Callable[[jax.Array, jax.Array], tuple[jax.Array, ...]]
    key: jax.Array


def param_loss(prediction: Prediction, targets: dict[str, jax.Array],
               categorical_weight: float, flow: FlowFns | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Parameter loss of ``prediction`` against ``targets`` (see ``heads.targets_from_normalized``),
    for each head kind (``training.heads``):

    * one preset (``regression``): MSE on the continuous values + ``categorical_weight`` x the
      cross-entropy of the categorical heads;
    * ``bins``: cross-entropy of each continuous parameter's bins against the true value spread
      over its nearest bins (a Gaussian one bin wide: neighbouring values are near misses), plus
      the categorical term;
    * ``mixture``: each hypothesis's regression loss; the best one per example takes
      1 - :data:`MIXTURE_EPSILON` of the weight (winner-takes-all, relaxed so no hypothesis
      dies), and the score head learns which hypothesis won.
    * ``flow`` (needs ``flow``): the flow-matching loss, the mean squared error between the
      velocity field and ``y1 - y0`` at :data:`heads.FLOW_DRAWS` points per example on the
      straight path from noise to the target (divided by 4: the flow space is twice the normalized
      scale), plus the categorical term of the decoder given the *true* continuous values
      (teacher forcing).

    Returns ``(loss, {"param_mse", "param_ce", "param_acc"})``, the metrics those of the one
    preset (``continuous``/``logits``), averaged over batch and parameters.
    """
    cont, target_cont = prediction["continuous"], targets["continuous"]
    mse = _mean_or((cont - target_cont) ** 2, 0.0)
    ce_point, acc_point = _categorical_terms(tuple(prediction["logits"]), targets["choice"])
    ce, acc = _mean_or(ce_point, 0.0), _mean_or(acc_point, 1.0)
    aux = {"param_mse": mse, "param_ce": ce, "param_acc": acc}
    if "flow_h" in prediction:
        if flow is None:
            raise ValueError("the flow head's parameter loss needs its velocity field and decoder (losses.FlowFns)")
        h = prediction["flow_h"]
        y_t, t, u = flow_pairs(target_cont, flow.key)
        fm = _mean_or(jnp.square(flow.velocity(h, y_t, t) - u), 0.0) / 4.0
        ce_forced, _ = _categorical_terms(flow.decode(h, target_cont), targets["choice"])
        return fm + categorical_weight * _mean_or(ce_forced, 0.0), aux
    if "bins" in prediction:
        bin_logits = prediction["bins"]  # [B, n, n_bins]
        n_bins = bin_logits.shape[-1]
        centers = bin_centers(n_bins)
        soft = jnp.exp(-0.5 * ((centers - target_cont[..., None]) * (n_bins - 1)) ** 2)
        soft = soft / jnp.sum(soft, axis=-1, keepdims=True)
        bins_ce = _mean_or(optax.softmax_cross_entropy(bin_logits, soft), 0.0)
        return bins_ce + categorical_weight * ce, aux
    if "hyp_score" in prediction:
        hyp_cont = prediction["hyp_continuous"]  # [B, K, n]
        k = hyp_cont.shape[1]
        per_mse = jnp.mean((hyp_cont - target_cont[:, None]) ** 2, axis=-1) if hyp_cont.shape[-1] else \
            jnp.zeros(hyp_cont.shape[:2])
        hyp_ce, _ = _categorical_terms(tuple(prediction["hyp_logits"]),
                                       jnp.broadcast_to(targets["choice"][:, None], hyp_cont.shape[:2] +
                                                        targets["choice"].shape[-1:]))
        per_hyp = per_mse + categorical_weight * (jnp.mean(hyp_ce, axis=-1) if hyp_ce.shape[-1] else 0.0)  # [B, K]
        winner = jnp.argmin(jax.lax.stop_gradient(per_hyp), axis=-1)
        w = jax.nn.one_hot(winner, k) * (1.0 - MIXTURE_EPSILON - MIXTURE_EPSILON / (k - 1)) + MIXTURE_EPSILON / (k - 1)
        wta = jnp.mean(jnp.sum(w * per_hyp, axis=-1))
        score = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(prediction["hyp_score"], winner))
        return wta + MIXTURE_SCORE_WEIGHT * score, aux
    return mse + categorical_weight * ce, aux


@jax.custom_vjp
def balance_gradients(continuous: jax.Array, logits: tuple[jax.Array, ...],
                      strength: jax.Array) -> tuple[jax.Array, tuple]:
    """Identity forward; backward, every predicted parameter gets a gradient of equal size.

    A spectral loss's gradient with respect to pitch-like parameters (LFO rate, detune, FM depth)
    is 100-1000x larger than with respect to envelopes, levels or the filter, and mostly
    uninformative (the loss is not convex in frequency). Passed to a shared network as it is, it
    swamps everything else. Here each parameter's cotangent (a column of ``continuous``
    [B, n]; a whole ``logits[j]`` [B, k]) is divided by its RMS over the batch, so each
    parameter pulls with the strength of a unit error, like Adam per parameter in direct
    optimisation. RMS values below 1e-3 of the largest are floored there, so parameters with
    (numerically) no gradient stay near zero instead of being amplified. Scaled by
    1 / (B x n_parameters), the gradient size of a mean absolute error, times ``strength`` (the
    loss weight, which the normalisation would otherwise cancel; it gets no gradient).
    """
    return continuous, logits


def _balance_fwd(continuous, logits, strength):
    return (continuous, logits), strength


def _balance_bwd(strength, cotangents):
    g_cont, g_logits = cotangents
    b = g_cont.shape[0]
    rms = [jnp.sqrt(jnp.mean(jnp.square(g_cont), axis=0))] + [jnp.sqrt(jnp.mean(jnp.square(g)))[None]
                                                              for g in g_logits]
    rms_all = jnp.concatenate(rms)
    n = rms_all.shape[0]
    floor = 1e-3 * jnp.max(rms_all) + 1e-30
    scale = strength / (b * n)
    out_cont = g_cont / jnp.maximum(rms[0], floor) * scale
    out_logits = tuple(g / jnp.maximum(r[0], floor) * scale for g, r in zip(g_logits, rms[1:]))
    return out_cont, out_logits, jnp.zeros_like(strength)


balance_gradients.defvjp(_balance_fwd, _balance_bwd)


def _stop_gradient_except(layout: HeadLayout, prediction: Prediction, names: tuple[str, ...]) -> Prediction:
    spec = layout.spec
    keep = jnp.asarray([spec.params[i].name in names for i in layout.continuous], dtype=bool)
    cont = prediction["continuous"]
    cont = jnp.where(keep[None, :], cont, jax.lax.stop_gradient(cont))
    logits = tuple(l if name in names else jax.lax.stop_gradient(l)
                   for l, name in zip(prediction["logits"], layout.categorical_names))
    return {"continuous": cont, "logits": logits}


def spectral_loss(prediction: Prediction, target_audio: jax.Array, layout: HeadLayout,
                  render_fn: RenderFn, distance_fn: DistanceFn, key: jax.Array,
                  balance_strength: jax.Array | None = None, straight_through: bool = False,
                  spectral_params: tuple[str, ...] = ("all",), notes: tuple[jax.Array, jax.Array] | None = None,
                  mesh: jax.sharding.Mesh | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Multi-resolution STFT distance between the relaxed proxy render of ``prediction`` and
    ``target_audio`` [B, C, T]. With ``balance_strength`` (the weight this loss gets), its
    gradient reaches each predicted parameter with equal strength (:func:`balance_gradients`);
    multiply the returned loss by the same weight. ``straight_through``: categorical choices
    rendered hard, with softmax gradients (``heads.relaxed_inputs``). ``spectral_params``: the
    parameters whose outputs get this loss's gradient (``("all",)``: every one); the rest are
    rendered at their predicted values without gradient. ``notes``: ``(pitch [B], velocity [B])``
    each sound plays (``render_fn``'s keywords; default: its own). ``mesh``: the 1-D device mesh
    the step's batch lives on (the run's, :func:`training.state.make_mesh`), over which render
    and distance are split (:func:`diffsynth.parallel.batch_parallel`; the proxy's per-sample
    loops then run on every core); None: not split. Returns ``(loss, {"spectral": loss})``."""
    if not spectral_params:  # would silently stop every gradient of this loss
        raise ValueError("spectral_params is empty: expected parameter names or ('all',) (a config's empty "
                         "loss.spectral_params means the synth's default: resolve it with train.step_loss_config)")
    if spectral_params != ("all",):
        prediction = _stop_gradient_except(layout, prediction, spectral_params)
    if balance_strength is not None:
        cont, logits = balance_gradients(prediction["continuous"], tuple(prediction["logits"]),
                                         jnp.asarray(balance_strength, jnp.float32))
        prediction = {"continuous": cont, "logits": logits}
    normalized, probs = relaxed_inputs(layout, prediction, straight_through=straight_through)

    def distance(normalized, probs, target, notes, key):  # [1]: the mean over these rows
        audio = render_fn(normalized, probs, key) if notes is None else \
            render_fn(normalized, probs, key, pitch=notes[0], velocity=notes[1])
        if audio.shape != target.shape:
            raise ValueError(f"proxy render has shape {audio.shape}, target audio {target.shape}; "
                             "expected the same [batch, 2, n_samples] (check the proxy config's duration)")
        return distance_fn(audio, target.astype(audio.dtype))[None]

    if mesh is None:
        loss = distance(normalized, probs, target_audio, notes, key)[0]
    else:  # equal shares: their mean is the batch mean
        from diffsynth.parallel import batch_parallel  # noqa: PLC0415

        loss = jnp.mean(batch_parallel(distance, (True, True, True, True, False), mesh)(
            normalized, probs, target_audio, notes, key))
    return loss, {"spectral": loss}


def schedule_weights(step: Any, cfg: LossConfig) -> tuple[float, float]:
    """(parameter weight, spectral weight) at ``step`` (a Python int: the schedule is static).

    ``param``: (param_weight, 0). ``spectral``: (0, spectral_weight). ``hybrid``: parameter loss
    alone for ``warmup_steps``, then over ``ramp_steps`` the spectral weight rises linearly to
    ``spectral_weight`` while the parameter weight falls to ``hybrid_param_weight_end``.
    """
    if cfg.schedule == "param":
        return cfg.param_weight, 0.0
    if cfg.schedule == "spectral":
        return 0.0, cfg.spectral_weight
    if cfg.schedule == "hybrid":
        if step < cfg.warmup_steps:
            return cfg.param_weight, 0.0
        r = 1.0 if cfg.ramp_steps == 0 else min(1.0, (step - cfg.warmup_steps + 1) / cfg.ramp_steps)
        w_param = cfg.param_weight + r * (cfg.hybrid_param_weight_end - cfg.param_weight)
        return w_param, r * cfg.spectral_weight
    raise ValueError(f"loss.schedule: expected 'param', 'spectral' or 'hybrid', got {cfg.schedule!r}")
