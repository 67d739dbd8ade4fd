"""Datasets: priors, determinism, reuse, resume after a kill, and render failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from proxies.amsynth.spec import AMSYNTH
from training.config import load_config
from training.data import (build_dataset, dataset_dir, data_fingerprint, factory_eval_presets, factory_presets,
                           fit_factory_prior, iterate_batches, sample_presets, split_presets, training_factory_prior)

ROOT = Path(__file__).resolve().parents[1]


def tiny(cache: Path, *extra: str):
    return load_config(None, [f"data.cache_dir={cache}", "data.n_train=6", "data.n_val=3", "data.n_test=3",
                              "data.shard_size=4", "data.sample_rate=16000", "data.duration_s=0.25",
                              "data.hold_s=0.15", "data.workers=1", "eval.n_random=3", "optim.batch_size=2",
                              "features.n_fft=512", "features.hop=128", "loss.fft_sizes=[128, 512]", *extra])


def fail_second_render(monkeypatch) -> None:
    """Make every batch the render pool renders lose its second preset (NaN audio and a
    ``RenderFailure``), as a plugin that crashes on one preset would; undo with monkeypatch.undo()."""
    import proxies.host as host

    real = host.RenderPool.render_batch

    def flaky(self, normalized, *a, **k):
        audio, failures = real(self, normalized, *a, **k)
        audio[1] = np.nan
        return audio, [*failures, host.RenderFailure(index=1, reason="injected", attempts=2)]

    monkeypatch.setattr(host.RenderPool, "render_batch", flaky)


def quiet(*_a, **_k):
    pass


# ------------------------------------------------------------------------------- priors
def test_presets_are_deterministic_and_respect_fixed_and_frozen(tmp_path):
    cfg = tiny(tmp_path, "data.frozen={ osc2_sync = 1.0 }").data
    a, b = split_presets(cfg, "train"), split_presets(cfg, "train")
    assert np.array_equal(a, b)
    assert not np.array_equal(split_presets(cfg, "train"), split_presets(cfg, "val")[:3].repeat(2, axis=0))
    assert np.all(a[:, AMSYNTH.index_of("osc2_sync")] == 1.0)
    for i, p in enumerate(AMSYNTH.params):
        if p.prior == "fixed":
            assert np.all(a[:, i] == pytest.approx(p.default_normalized))
    assert np.array_equal(AMSYNTH.snap_normalized(a), a), "presets must already lie on the plugin's grid"


def test_factory_prior_matches_factory_frequencies_and_mixes():
    names, fac = factory_presets("amsynth")
    assert len(names) == len(fac) > 1000
    prior = fit_factory_prior(AMSYNTH, fac)
    rng = np.random.default_rng(0)
    x = sample_presets(AMSYNTH, rng, 4000, prior, factory_weight=1.0)
    ft = AMSYNTH.index_of("filter_type")
    want = np.bincount(AMSYNTH.category_of(fac)[:, ft], minlength=5) / len(fac)
    got = np.bincount(AMSYNTH.category_of(x)[:, ft], minlength=5) / len(x)
    assert np.abs(want - got).max() < 0.04
    att = AMSYNTH.index_of("amp_attack")  # factory attacks are mostly short; uniform ones are not
    assert abs(np.mean(x[:, att]) - np.mean(fac[:, att])) < 0.05
    u = sample_presets(AMSYNTH, np.random.default_rng(0), 4000, prior, factory_weight=0.0)
    assert abs(np.mean(u[:, att]) - 0.5) < 0.03
    m = sample_presets(AMSYNTH, np.random.default_rng(0), 4000, prior, factory_weight=0.5)
    assert np.mean(x[:, att]) < np.mean(m[:, att]) < np.mean(u[:, att])


def test_factory_prior_holds_out_the_factory_targets_and_leaves_the_test_split_uniform(tmp_path):
    uniform = tiny(tmp_path, "data.n_test=40").data
    cfg = tiny(tmp_path, "data.n_test=40", "data.factory_prior_weight=0.5").data
    _, fac = factory_presets("amsynth")
    _, held = factory_eval_presets(cfg, 256)
    prior = training_factory_prior(cfg, 256)
    assert training_factory_prior(uniform, 256) is None
    # fitted to the corpus without the 256 presets the evaluation scores (rows, not names: names repeat)
    rest = np.array([not any(np.array_equal(row, h) for h in held) for row in fac])
    assert len(fac) - rest.sum() >= 256
    assert prior.digest() == fit_factory_prior(AMSYNTH, fac[rest]).digest()
    assert prior.digest() != fit_factory_prior(AMSYNTH, fac).digest()
    assert training_factory_prior(cfg, 32).digest() != prior.digest()
    # the random targets are the uniform prior's whatever the weight; training presets are not
    assert np.array_equal(split_presets(cfg, "test", prior), split_presets(uniform, "test"))
    assert not np.array_equal(split_presets(cfg, "train", prior), split_presets(uniform, "train"))
    att = AMSYNTH.index_of("amp_attack")
    many = tiny(tmp_path, "data.n_train=2000", "data.factory_prior_weight=0.5").data
    assert np.mean(split_presets(many, "train", prior)[:, att]) < np.mean(split_presets(uniform, "test")[:, att]) - 0.1
    with pytest.raises(ValueError, match="training_factory_prior"):
        split_presets(cfg, "train")
    with pytest.raises(ValueError, match="n_eval_factory"):
        build_dataset(cfg, progress=False, log=quiet)
    # a dataset made before the test split was uniform is not reused
    assert data_fingerprint(cfg, AMSYNTH, prior)["test_prior"] == "uniform"
    assert "test_prior" not in data_fingerprint(uniform, AMSYNTH, None)


def test_fingerprint_ignores_workers_but_not_content(tmp_path):
    base = tiny(tmp_path).data
    fp = lambda c: dataset_dir(c, data_fingerprint(c, AMSYNTH, None))  # noqa: E731
    assert fp(base) == fp(tiny(tmp_path, "data.workers=3").data)
    assert fp(base) != fp(tiny(tmp_path, "data.seed=1").data)
    assert fp(base) != fp(tiny(tmp_path, "data.note=61").data)


def test_batches_depend_only_on_seed_and_step():
    full = [next(iter_) for iter_ in [iterate_batches(10, 3, 0)] for _ in range(7)]
    it = iterate_batches(10, 3, 0)
    full = [next(it) for _ in range(7)]
    resumed = iterate_batches(10, 3, 0, start_step=4)
    for s in range(4, 7):
        assert np.array_equal(next(resumed), full[s])
    assert all(len(b) == 3 for b in full)


# ------------------------------------------------------------------------------- real plugin
@pytest.mark.plugin
def test_build_reuse_determinism_and_resume(tmp_path, amsynth_path):
    from proxies.host import is_reproducible

    cfg = tiny(tmp_path / "a").data
    logs: list[str] = []
    ds = build_dataset(cfg, progress=False, log=logs.append)
    assert ds.manifest["complete"] and (ds.root / "manifest.json").is_file()
    assert ds.train.audio.shape == (6, 2, cfg.n_samples) and ds.train.audio.dtype == np.float16
    assert ds.train.normalized.shape == (6, AMSYNTH.n_params) and ds.train.internal.shape == (6, AMSYNTH.n_params)
    assert np.all(np.isfinite(ds.train.audio.astype(np.float32)))
    assert np.abs(ds.train.audio.astype(np.float32)).max() > 1e-3, "the plugin rendered only silence"
    assert sorted(p.name for p in ds.root.glob("*.npz")) == ["gallery-0000.npz", "gallery-0001.npz", "test-0000.npz",
                                                             "train-0000.npz", "train-0001.npz", "val-0000.npz"]
    # many notes: training presets play notes and velocities of the config's ranges, the gallery
    # the same presets at data.note (what the nearest-neighbour lookup compares held-out sounds with)
    lo, hi = cfg.note_range
    assert ((ds.train.pitch >= lo) & (ds.train.pitch <= hi)).all() and len(set(ds.train.pitch.tolist())) > 1
    assert (ds.gallery.pitch == cfg.note).all() and np.array_equal(ds.gallery.normalized, ds.train.normalized)
    assert (ds.test.pitch == cfg.note).all() and (ds.test.velocity == cfg.velocity).all()

    # reused: nothing rendered
    logs.clear()
    again = build_dataset(cfg, progress=False, log=logs.append)
    assert not any("rendering" in m for m in logs)
    assert np.array_equal(again.train.audio, ds.train.audio)

    # deterministic: a second directory renders the same presets and the same audio
    other = build_dataset(tiny(tmp_path / "b").data, progress=False, log=quiet)
    rep = is_reproducible("amsynth", ds.train.normalized)
    assert np.array_equal(other.train.normalized, ds.train.normalized)
    assert np.array_equal(other.train.audio[rep], ds.train.audio[rep])

    # resume: a missing shard, a truncated one and a stale temp file are redone; the rest is kept
    (ds.root / "train-0001.npz").unlink()
    data = (ds.root / "val-0000.npz").read_bytes()
    (ds.root / "val-0000.npz").write_bytes(data[: len(data) // 2])
    (ds.root / "test-0000.npz.tmp123").write_bytes(b"partial")
    kept = (ds.root / "train-0000.npz").stat().st_mtime_ns
    logs.clear()
    resumed = build_dataset(cfg, progress=False, log=logs.append)
    assert any("rendering 5 presets in 2 shard(s)" in m for m in logs), logs
    assert (ds.root / "train-0000.npz").stat().st_mtime_ns == kept
    assert not list(ds.root.glob("*.tmp*"))
    assert np.array_equal(resumed.train.normalized, ds.train.normalized)
    assert np.array_equal(resumed.train.audio[rep], ds.train.audio[rep])
    rep_val = is_reproducible("amsynth", ds.val.normalized)
    assert np.array_equal(resumed.val.audio[rep_val], ds.val.audio[rep_val])


@pytest.mark.plugin
def test_kill_during_generation_then_resume(tmp_path, amsynth_path):
    cache = tmp_path / "cache"
    args = [f"data.cache_dir={cache}", "data.n_train=40", "data.n_val=2", "data.n_test=2", "data.shard_size=4",
            "data.duration_s=0.25", "data.hold_s=0.15", "data.workers=1", "eval.n_random=2", "optim.batch_size=2",
            "features.n_fft=512", "features.hop=128", "loss.fft_sizes=[128, 512]"]
    code = ("import sys; from training.config import load_config; from training.data import build_dataset\n"
            "if __name__ == '__main__':\n"
            "    build_dataset(load_config(None, sys.argv[1:]).data, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(list(cache.glob("*/train-*.npz"))) < 2:
            time.sleep(0.05)
        assert len(list(cache.glob("*/train-*.npz"))) >= 2, "generation did not start"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the generator and its render workers, at once
        proc.wait()
    root = next(cache.iterdir())
    done_before = {p.name: p.stat().st_mtime_ns for p in root.glob("*.npz")}
    assert len(done_before) < 12, "the kill came too late to test resuming"
    logs: list[str] = []
    cfg = load_config(None, args).data
    ds = build_dataset(cfg, progress=False, log=logs.append)
    assert ds.manifest["complete"] and len(ds.train) == 40
    for name, mtime in done_before.items():  # finished shards were kept, not rendered again
        assert (root / name).stat().st_mtime_ns == mtime
    assert np.array_equal(ds.train.normalized, split_presets(cfg, "train"))


@pytest.mark.plugin
def test_failed_renders_are_dropped_and_reported(tmp_path, amsynth_path, monkeypatch):
    fail_second_render(monkeypatch)
    logs: list[str] = []
    ds = build_dataset(tiny(tmp_path).data, progress=False, log=logs.append)
    assert any("failed to render and are dropped" in m for m in logs)
    assert len(ds.train) == 4 and 1 not in ds.train.index.tolist() and 5 not in ds.train.index.tolist()
    assert ds.manifest["shards"]["train-0000.npz"]["failed"] == [1]
    assert np.all(np.isfinite(ds.train.audio.astype(np.float32)))
    # a rebuild keeps the shards with their recorded failures (no endless re-rendering)
    logs.clear()
    build_dataset(tiny(tmp_path).data, progress=False, log=logs.append)
    assert not any("rendering" in m for m in logs)
