"""Training above the seam on synths other than amsynth: a probed VST plugin (Nekobi, no proxy)
trains with the parameter loss and is evaluated through the real plugin; configs that need a
proxy it does not have are refused up front, naming the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def _tiny(tmp_path: Path, *extra: str):
    return load_config(ROOT / "configs" / "nekobi.toml", [
        f"run.runs_dir={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'data'}",
        "data.n_train=24", "data.n_val=4", "data.n_test=6", "data.shard_size=12", "data.workers=1",
        "data.duration_s=0.25", "data.hold_s=0.15", "features.n_fft=512", "features.hop=128", "features.n_mels=32",
        "model.channels=[4, 8]", "model.hidden=16", "loss.fft_sizes=[128, 512]",
        "optim.batch_size=4", "optim.steps=6", "optim.log_every=1", "optim.eval_every=3",
        "optim.checkpoint_every=3", "optim.lr_warmup_steps=0", "eval.n_random=6", "eval.batch_size=4", *extra])


def test_synth_without_proxy_refuses_the_spectral_loss():
    with pytest.raises(ConfigError, match=r"loss\.schedule.*nekobi.*no differentiable proxy.*param"):
        load_config(ROOT / "configs" / "nekobi.toml", ["loss.schedule=hybrid"])


def test_nekobi_fit_and_evaluate_end_to_end(tmp_path):
    from training.train import train_and_evaluate

    cfg = _tiny(tmp_path)
    assert cfg.run_dir.name == "nekobi"
    logs: list[str] = []
    train_and_evaluate(cfg, progress=False, log=logs.append)
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    rows = summary["eval"]["random"]
    assert set(rows) == {"model", "mean_preset", "nearest_neighbour"}, "no proxy: no proxy search row"
    for m in rows.values():
        assert m["n"] == 6 and np.isfinite(m["mss"]) and m["mss"] > 0
    assert summary["eval_unavailable"]["model+proxy_search"].endswith("no differentiable proxy")
    assert any("model+proxy_search: not available" in m for m in logs), logs
    shard = next(Path(summary["dataset"]).glob("train-*.npz"))
    with np.load(shard) as z:
        assert z["audio"].shape[1:] == (1, 4000), "Nekobi is mono: [N, 1, T]"
