"""Which parameters can the spectral loss teach? ``python -m training.diagnostics --run runs/<name>``

For a trained run's predictions on training sounds, take the gradient of the proxy spectral
loss (relaxed, straight-through categoricals) with respect to each predicted parameter and ask
whether a descent step moves the parameter towards its true value. Reported per parameter:

* ``agreement``: fraction of sounds where it does (0.5 = chance);
* ``weighted``: the same, weighted by the gradient's magnitude (what an optimiser feels);
* ``rms``: the gradient's size.

The default ``loss.spectral_params`` are the parameters with ``weighted >= 0.6`` measured this
way on the parameter-loss model of ``configs/amsynth_param.toml``: pitch-like parameters
(osc2_detune 0.09, lfo_freq 0.40) and all categorical ones were at or below chance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


def agreement(grads: np.ndarray, deltas: np.ndarray) -> dict[str, np.ndarray]:
    """Per column of ``grads`` [N, P] (loss gradient) and ``deltas`` [N, P] (target - prediction):
    ``agreement``, ``weighted`` (by |grad|) and ``rms`` (see the module docstring)."""
    good = np.sign(-grads) == np.sign(deltas)
    good &= grads != 0
    w = np.abs(grads)
    return {
        "agreement": good.mean(axis=0),
        "weighted": (w * good).sum(axis=0) / np.maximum(w.sum(axis=0), 1e-30),
        "rms": np.sqrt(np.mean(grads ** 2, axis=0)),
    }


def categorical_agreement(grads: np.ndarray, true_choice: np.ndarray) -> float:
    """Fraction of sounds where a descent step on the logits [N, K] raises the true choice's logit
    more than the others' on average."""
    push = -grads
    rows = np.arange(len(true_choice))
    own = push[rows, true_choice]
    others = (push.sum(axis=1) - own) / max(grads.shape[1] - 1, 1)
    return float(np.mean(own > others))


def spectral_gradient_agreement(run_dir: str | Path, n_sounds: int = 64, batch: int = 8) -> dict[str, Any]:
    """:func:`agreement` of every learned parameter for the ``best`` checkpoint of ``run_dir``."""
    import jax
    import jax.numpy as jnp

    from training.data import build_dataset
    from training.evaluate_core import load_predictor
    from training.heads import note_features, relaxed_inputs
    from training.models import make_model
    from training.proxy_loss import make_distance_fn, make_proxy_render

    pred = load_predictor(run_dir, "best")
    cfg, layout = pred.cfg, pred.layout
    data = build_dataset(cfg.data, progress=False, log=lambda *_: None,
                         n_eval_factory=cfg.eval.n_factory).lookup  # at data.note: the proxy's note
    model = make_model(cfg.model, layout)
    render_fn, distance_fn = make_proxy_render(cfg.data), make_distance_fn(cfg.loss)

    note = note_features(np.full(batch, cfg.data.note), np.full(batch, cfg.data.velocity), np)

    @jax.jit
    def predict(audio):
        features = (pred.feature_fn(audio) - pred.feature_mean) / pred.feature_std
        return model.apply({"params": pred.params}, features, note[:audio.shape[0]])

    def loss(cont, logits, target, key):
        n, probs = relaxed_inputs(layout, {"continuous": cont, "logits": logits}, straight_through=True)
        return distance_fn(render_fn(n, probs, key), target)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    gs, ds, gls, truth = [], [], [], []
    for b, a in enumerate(range(0, min(n_sounds, len(data)), batch)):
        idx = np.arange(a, min(a + batch, len(data)))
        audio = jnp.asarray(data.audio[idx], jnp.float32)
        p = predict(audio)
        g_cont, g_logits = grad(p["continuous"], p["logits"], audio, jax.random.key(b))
        gs.append(np.asarray(g_cont))
        gls.append([np.asarray(g) for g in g_logits])
        ds.append(data.normalized[idx][:, list(layout.continuous)] - np.asarray(p["continuous"]))
        truth.append(data.normalized[idx])
    cont = agreement(np.concatenate(gs), np.concatenate(ds))
    choices = layout.spec.category_of(np.concatenate(truth))
    out: dict[str, Any] = {}
    for j, i in enumerate(layout.continuous):
        out[layout.spec.params[i].name] = {k: float(v[j]) for k, v in cont.items()}
    for j, i in enumerate(layout.categorical):
        g = np.concatenate([x[j] for x in gls])
        out[layout.spec.params[i].name] = {"weighted": categorical_agreement(g, choices[:, i]),
                                           "rms": float(np.sqrt(np.mean(g ** 2)))}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.diagnostics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a run directory (runs/<name>) with a best checkpoint")
    p.add_argument("--n", type=int, default=64, help="training sounds to measure on (default %(default)s)")
    p.add_argument("--json", help="also write the table here")
    args = p.parse_args(argv)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "jax"))
    table = spectral_gradient_agreement(args.run, args.n)
    for name, row in sorted(table.items(), key=lambda kv: -kv[1]["weighted"]):
        print(f"{name:20s} weighted {row['weighted']:.2f}  agreement {row.get('agreement', float('nan')):.2f}  "
              f"rms {row['rms']:.3g}")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (diffsynth.runtime: faster JAX, same output)
    sys.exit(main())
