"""Shipped models: a trained encoder per synth that lives in the repository, loaded by name.

    python -m training.ship --config configs/amsynth_ship.toml     # makes training/shipped/amsynth/

A shipped model is a folder ``training/shipped/<synth>/``:

    config.json     the run's resolved config (what the model hears and predicts)
    weights.npz     the network's parameters and the feature standardisation, float32
    manifest.json   synth, sha256 of the weights, how it was made (command, seconds), its evaluation

Only the parameters are kept (no optimiser state), so the folder stays small; ``manifest.json``'s
``weights_sha256`` (over the arrays' names, shapes and bytes) is checked on every load, so a damaged
or edited file is refused with the fix named. ``training.match SOUND --synth NAME`` loads it with
no trained run; its evaluation (the run's, through the real engine) is in the manifest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from training.cli import MatchError

#: where shipped models live (inside the package: found from any working directory)
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
WEIGHTS, CONFIG, MANIFEST = "weights.npz", "config.json", "manifest.json"


class ShippedModelError(MatchError):
    """No shipped model for a synth, or a damaged one; the message names the fix."""


def shipped_dir(synth: str, root: Path | None = None) -> Path:
    return (root or SHIPPED_DIR) / synth


def available(root: Path | None = None) -> list[str]:
    """Synths with a shipped model."""
    root = root or SHIPPED_DIR
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file()) if root.is_dir() else []


def weights_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the arrays' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _flatten(tree: Any, prefix: str = "params") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}"
        if isinstance(value, dict) or hasattr(value, "items"):
            out.update(_flatten(dict(value), path))
        else:
            out[path] = np.asarray(value, np.float32)
    return out


def _unflatten(arrays: dict[str, np.ndarray], template: Any, prefix: str = "params") -> Any:
    out = {}
    for key, value in template.items():
        path = f"{prefix}/{key}"
        if isinstance(value, dict) or hasattr(value, "items"):
            out[key] = _unflatten(arrays, dict(value), path)
        else:
            if path not in arrays:
                raise ShippedModelError(f"{WEIGHTS} lacks {path}: it was made for another model than its "
                                        f"{CONFIG} describes")
            if tuple(arrays[path].shape) != tuple(np.shape(value)):
                raise ShippedModelError(f"{WEIGHTS}: {path} has shape {arrays[path].shape}, the model expects "
                                        f"{np.shape(value)}")
            out[key] = arrays[path]
    return out


def export(run_dir: str | Path, out_root: Path | None = None, made_by: str = "", extra: dict | None = None) -> Path:
    """Write the best checkpoint of ``run_dir`` as the shipped model of its synth; returns the
    folder. The three files are written as one set (a failure leaves the previous model whole);
    the weights' digest goes into the manifest."""
    import io

    from proxies.files import OutputSet, json_text
    from training.evaluate_core import load_predictor

    pred = load_predictor(run_dir, "best")
    synth = pred.cfg.data.synth
    if synth.startswith("vst:"):
        raise ShippedModelError("shipping a model of a probed vst: synth needs it registered by name first "
                                "(proxies/synth.py); expected a registered synth")
    arrays = _flatten(pred.params)
    arrays["feature_mean"] = np.asarray(pred.feature_mean, np.float32)
    arrays["feature_std"] = np.asarray(pred.feature_std, np.float32)
    folder = shipped_dir(synth, out_root)
    buf = io.BytesIO()
    np.savez(buf, **{k: arrays[k] for k in sorted(arrays)})
    cfg = json.loads((Path(run_dir) / CONFIG).read_text())
    summary_path = Path(run_dir) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    manifest = {
        "synth": synth,
        "weights_sha256": weights_digest(arrays),
        "n_weights": int(sum(a.size for k, a in arrays.items() if k.startswith("params/"))),
        "made_by": made_by,
        "eval": summary.get("eval"),
        "eval_methods": summary.get("eval_methods"),
        "wall_seconds": summary.get("wall_seconds"),
        "best_step": summary.get("best_step"),
        **(extra or {}),
    }
    with OutputSet() as out:
        out.write_bytes(folder / WEIGHTS, buf.getvalue())
        for name, obj in ((CONFIG, cfg), (MANIFEST, manifest)):
            out.write_bytes(folder / name, json_text(obj, 1, True).encode("utf-8"))
    return folder


def read_manifest(synth: str, root: Path | None = None) -> dict[str, Any]:
    folder = shipped_dir(synth, root)
    path = folder / MANIFEST
    if not path.is_file():
        have = available(root)
        raise ShippedModelError(
            f"no shipped model for {synth!r} (expected {path}); shipped: {', '.join(have) or 'none'}. Fix: pass "
            f"--run runs/<name> (a run trained with python -m training.fit), or make one with python -m "
            f"training.ship --config configs/{synth}_ship.toml")
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or "weights_sha256" not in manifest:
            raise ValueError("no weights_sha256")
    except (OSError, ValueError) as e:
        raise ShippedModelError(f"{path} is damaged ({e}); expected the manifest training.ship wrote. Fix: "
                                "restore the repository's copy (git checkout -- training/shipped)") from None
    return manifest


def load(synth: str, root: Path | None = None):
    """The :class:`training.evaluate_core.Predictor` of the shipped model of ``synth``."""
    import jax
    import jax.numpy as jnp

    from training.config import from_dict
    from training.evaluate_core import Predictor, model_parts

    manifest = read_manifest(synth, root)
    folder = shipped_dir(synth, root)
    fix = "restore the repository's copy (git checkout -- training/shipped) or remake it with python -m training.ship"
    try:
        with np.load(folder / WEIGHTS) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
        cfg = from_dict(json.loads((folder / CONFIG).read_text()))
    except Exception as e:  # noqa: BLE001  (zip, npy and JSON errors alike: a damaged file)
        raise ShippedModelError(f"the shipped model in {folder} cannot be read ({type(e).__name__}: "
                                f"{str(e).strip()[:200]}). Fix: {fix}") from None
    if weights_digest(arrays) != manifest["weights_sha256"]:
        raise ShippedModelError(f"{folder / WEIGHTS} does not match its manifest's sha256 (damaged or edited). "
                                f"Fix: {fix}")
    layout, feature_fn, model, example = model_parts(cfg)
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), *example))["params"]
    try:
        params = _unflatten(arrays, template)
    except ShippedModelError as e:
        raise ShippedModelError(f"{folder}: {e}. Fix: {fix}") from None
    params = jax.tree.map(jnp.asarray, params)
    return Predictor(cfg, layout, params, jnp.asarray(arrays["feature_mean"]), jnp.asarray(arrays["feature_std"]),
                     feature_fn)
