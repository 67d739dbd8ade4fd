"""Rendering on Ray (proxies/ray_engine.py, data.backend = "ray"): a real local Ray runtime renders
datasets identical, array for array, to the process pool's (amsynth through DawDreamer, Dexed
in-process), resumes them, survives a worker killed mid-chunk, and reports failing presets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from proxies.notes import Note, RenderFailure
from proxies.synth import Engine, PresetFormats, Synth, get_synth
from training.config import ConfigError, load_config
from training.data import build_dataset, data_fingerprint, dataset_dir

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

pytest.importorskip("ray", reason='the Ray backend needs `pip install -e ".[ray]"`')


def tiny(cache: Path, *extra: str):
    """24 presets (16 / 4 / 4) in shards of 8, 16 kHz, 0.25 s."""
    return load_config(None, [f"data.cache_dir={cache}", "data.n_train=16", "data.n_val=4", "data.n_test=4",
                              "data.shard_size=8", "data.sample_rate=16000", "data.duration_s=0.25",
                              "data.hold_s=0.15", "data.workers=2", "eval.n_random=4", "optim.batch_size=2",
                              "features.n_fft=512", "features.hop=128", "loss.fft_sizes=[128, 512]", *extra]).data


def shards(root: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for p in sorted(root.glob("*.npz")):
        with np.load(p) as z:
            out[p.name] = {k: z[k] for k in z.files}
    return out


def assert_same_files(a: Path, b: Path) -> None:
    fa, fb = shards(a), shards(b)
    assert sorted(fa) == sorted(fb) and fa
    for name in fa:
        assert sorted(fa[name]) == sorted(fb[name]), name
        for key in fa[name]:
            x, y = fa[name][key], fb[name][key]
            assert x.dtype == y.dtype and x.shape == y.shape, (name, key)
            assert np.array_equal(x, y), (name, key)


@pytest.fixture(scope="module")
def ray_runtime():
    import ray

    # the workers import this file's module (the test synth below) and the checkout
    path = os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------------------ no runtime needed
def test_backend_keys_are_checked_and_leave_the_fingerprint_alone(tmp_path):
    from proxies.amsynth.spec import AMSYNTH

    base = tiny(tmp_path)
    ray_cfg = tiny(tmp_path, "data.backend=ray", "data.ray_address=auto")
    assert (ray_cfg.backend, ray_cfg.ray_address) == ("ray", "auto")
    fp = lambda c: dataset_dir(c, data_fingerprint(c, AMSYNTH, None))  # noqa: E731
    assert fp(base) == fp(ray_cfg)
    with pytest.raises(ConfigError, match=r"data\.backend.*'process', 'ray'"):
        tiny(tmp_path, "data.backend=dask")
    with pytest.raises(ConfigError, match=r"data\.ray_address.*data\.backend = \"ray\""):
        tiny(tmp_path, "data.ray_address=auto")


def test_missing_ray_names_the_install_command(monkeypatch):
    from proxies import ray_engine

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ray_engine.RayUnavailableError, match=r'pip install -e "\.\[ray\]"'):
        ray_engine.open_ray_engine("amsynth", 16000, 2)


# ------------------------------------------------------------------------------ a real Ray runtime
@pytest.mark.plugin
def test_amsynth_dataset_on_ray_equals_the_process_pool_and_resumes(tmp_path, amsynth_path, ray_runtime):
    pool = build_dataset(tiny(tmp_path / "pool"), progress=False, log=lambda *_: None)
    logs: list[str] = []
    on_ray = build_dataset(tiny(tmp_path / "ray", "data.backend=ray"), progress=False, log=logs.append)
    assert any("rendering 40 presets in 6 shard(s)" in m for m in logs), logs  # gallery included
    assert on_ray.root.name == pool.root.name  # the same fingerprint
    assert_same_files(pool.root, on_ray.root)

    # resumable: a missing and a truncated shard are rendered again (on Ray), the rest is kept
    (on_ray.root / "train-0001.npz").unlink()
    data = (on_ray.root / "val-0000.npz").read_bytes()
    (on_ray.root / "val-0000.npz").write_bytes(data[: len(data) // 2])
    kept = (on_ray.root / "train-0000.npz").stat().st_mtime_ns
    logs.clear()
    build_dataset(tiny(tmp_path / "ray", "data.backend=ray"), progress=False, log=logs.append)
    assert any("rendering 12 presets in 2 shard(s)" in m for m in logs), logs
    assert (on_ray.root / "train-0000.npz").stat().st_mtime_ns == kept
    assert_same_files(pool.root, on_ray.root)


def test_dexed_dataset_on_ray_equals_the_in_process_engine(tmp_path, ray_runtime):
    pytest.importorskip("dexed", reason="dexed-py is not installed")
    extra = ("data.synth=dexed",)
    local = build_dataset(tiny(tmp_path / "local", *extra), progress=False, log=lambda *_: None)
    on_ray = build_dataset(tiny(tmp_path / "ray", *extra, "data.backend=ray"), progress=False, log=lambda *_: None)
    assert local.train.audio.shape[1] == 1 and np.abs(local.train.audio.astype(np.float32)).max() > 1e-3
    assert_same_files(local.root, on_ray.root)


@pytest.mark.plugin
def test_a_worker_killed_mid_chunk_loses_and_duplicates_nothing(tmp_path, amsynth_path, ray_runtime):
    from proxies.ray_engine import open_ray_engine

    synth = get_synth("amsynth")
    presets = synth.sample_presets(np.random.default_rng(7), 16)
    notes = [(Note(60 + i % 5, 100, 0.0, 0.15),) for i in range(16)]  # per-row notes travel with their rows
    reference = synth.open_engine(16000, workers=2)
    try:
        want, want_failures = reference.render(presets, notes, 0.25)
    finally:
        reference.close()
    assert not want_failures
    marker = tmp_path / "killed"
    engine = open_ray_engine(synth, 16000, 2, chunk_size=4, _kill_marker=str(marker))
    try:
        assert engine.kind == "ray" and engine.channels == 2 and engine.sample_rate == 16000
        got, failures = engine.render(presets, notes, 0.25)
    finally:
        engine.close()
    assert marker.is_file(), "no worker was killed"
    victim = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)  # that worker is gone; its chunk was retried elsewhere
    assert failures == []
    assert np.array_equal(got, want)  # every row once, in its place


# a test-only synth: renders a sine per preset, and fails presets whose first value is > 0.8
def _toy_open_engine(sample_rate: int, workers: int = 1, **options) -> Engine:
    def render(normalized, notes, duration_s, progress=False):
        n = np.asarray(normalized)
        t = np.arange(int(round(duration_s * sample_rate))) / sample_rate
        audio = np.sin(2 * np.pi * (100 + 500 * n[:, 1:2]) * t)[:, None, :].astype(np.float32)
        bad = np.flatnonzero(n[:, 0] > 0.8)
        audio[bad] = np.nan
        return audio, [RenderFailure(int(i), "toy failure", 2, ("toy failure", "toy failure")) for i in bad]

    return Engine(render=render, reproducible=lambda n: np.ones(len(n), bool), close=lambda: None, channels=1,
                  sample_rate=sample_rate, kind="inprocess")


def _no_preset(*_a, **_k):
    raise NotImplementedError


def test_failing_presets_come_back_as_failures_with_their_batch_index(ray_runtime):
    from proxies.amsynth.spec import AMSYNTH
    from proxies.ray_engine import open_ray_engine

    toy = Synth(name="toy-ray-test", spec=AMSYNTH, channels=1, open_engine=_toy_open_engine,
                presets=PresetFormats((), _no_preset, _no_preset, _no_preset, ".x"))
    presets = np.full((10, AMSYNTH.n_params), 0.5)
    presets[[3, 8], 0] = 0.9
    presets[:, 1] = np.linspace(0, 1, 10)
    engine = open_ray_engine(toy, 8000, 2, chunk_size=3)  # chunks 0-2, 3-5, 6-8, 9
    try:
        audio, failures = engine.render(presets, (Note(60, 100, 0.0, 0.05),), 0.1)
        assert engine.reproducible(presets).all()
    finally:
        engine.close()
    want, want_failures = _toy_open_engine(8000).render(presets, None, 0.1)
    assert [f.index for f in failures] == [3, 8] and failures == want_failures
    assert np.isnan(audio[[3, 8]]).all() and np.array_equal(audio, want, equal_nan=True)


def test_an_engine_that_cannot_open_raises_its_own_error(ray_runtime):
    import functools

    from proxies.host import PluginInfo, PluginNotFoundError, open_engine
    from proxies.ray_engine import open_ray_engine

    amsynth = get_synth("amsynth")
    missing = amsynth._replace(name="missing-plugin-test",
                               open_engine=functools.partial(open_engine, PluginInfo("nothing", "/nonexistent/x.so")))
    with pytest.raises(PluginNotFoundError, match="/nonexistent/x.so"):
        open_ray_engine(missing, 16000, 1)
