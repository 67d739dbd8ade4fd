"""The proxy-guided search that improves a model's prediction without the plugin
(training.proxy_search), judged by re-rendering through the real plugin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def _short_config(tmp_path: Path):
    return load_config(ROOT / "configs" / "amsynth.toml", [
        f"data.cache_dir={tmp_path / 'data'}", "data.duration_s=0.25", "data.hold_s=0.15", "data.workers=1"])


def test_sampled_choices_follow_the_probabilities():
    from training.heads import sample_choices

    rng = np.random.default_rng(0)
    probs = np.tile(np.asarray([[0.1, 0.0, 0.6, 0.3]]), (20000, 1))
    counts = np.bincount(sample_choices(rng, probs), minlength=4) / len(probs)
    np.testing.assert_allclose(counts, probs[0], atol=0.01)
    assert counts[1] == 0.0


def test_bad_arguments_name_the_problem(tmp_path):
    from training.data import spec_of
    from training.heads import head_layout
    from training.proxy_search import proxy_search

    cfg = _short_config(tmp_path)
    layout = head_layout(spec_of("amsynth"), cfg.data.frozen)
    start = np.tile(np.asarray(layout.base_normalized), (2, 1))
    probs = [np.full((2, k), 1.0 / k) for k in layout.n_choices]
    with pytest.raises(ValueError, match="one target per preset"):
        proxy_search(cfg.data, layout, start, probs, np.zeros((3, 2, cfg.data.n_samples)))
    with pytest.raises(ValueError, match="candidates >= 1"):
        proxy_search(cfg.data, layout, start, probs, np.zeros((2, 2, cfg.data.n_samples)), candidates=0)


@pytest.mark.plugin
def test_search_moves_towards_real_plugin_targets(tmp_path, amsynth_path):
    """From the mean preset towards real-plugin renders of random presets: the proxy distance
    never rises, the re-rendered plugin distance falls, and a fixed seed repeats the result."""
    from training.data import EngineRenderer, sample_presets, spec_of
    from training.evaluate_core import audio_metrics, mean_preset
    from training.heads import head_layout
    from training.proxy_search import proxy_search

    cfg = _short_config(tmp_path)
    spec = spec_of("amsynth")
    layout = head_layout(spec, cfg.data.frozen)
    train = sample_presets(spec, np.random.default_rng(1), 512, frozen=cfg.data.frozen)
    targets = sample_presets(spec, np.random.default_rng(2), 8, frozen=cfg.data.frozen)
    start = np.tile(mean_preset(layout, train), (len(targets), 1))
    cats = spec.category_of(train)
    probs = [np.tile(np.bincount(cats[:, i], minlength=k) / len(train), (len(targets), 1))
             for i, k in zip(layout.categorical, layout.n_choices)]
    with EngineRenderer(cfg.data) as renderer:
        target_audio, ok = renderer.render(targets)
        assert ok.all()
        found = proxy_search(cfg.data, layout, start, probs, target_audio, rounds=3, candidates=12, seed=0)
        again = proxy_search(cfg.data, layout, start, probs, target_audio, rounds=3, candidates=12, seed=0)
        before, _ = renderer.render(start)
        after, ok = renderer.render(found.presets)
        assert ok.all()
    np.testing.assert_array_equal(found.presets, again.presets)
    assert found.renders_per_target == 1 + 3 * 12
    given = proxy_search(cfg.data, layout, start, probs, target_audio, rounds=3, candidates=12, seed=0,
                         start_distance=found.start_distance)  # the start's render is not spent again
    assert given.renders_per_target == 3 * 12
    np.testing.assert_array_equal(given.presets, found.presets)
    assert np.all(found.proxy_distance <= found.start_distance)
    assert np.mean(found.proxy_distance) < 0.9 * np.mean(found.start_distance)
    mss_before = audio_metrics(before, target_audio, cfg.data.sample_rate)["mss"]
    mss_after = audio_metrics(after, target_audio, cfg.data.sample_rate)["mss"]
    # the proxy tracks the plugin (fidelity >= 40 dB), so what it found is better on the plugin too
    np.testing.assert_allclose(mss_after, found.proxy_distance, rtol=0.05, atol=0.02)  # measured max 0.002
    assert np.mean(mss_after) < 0.6 * np.mean(mss_before), (mss_before, mss_after)  # measured 4.76 -> 1.84


@pytest.mark.plugin
def test_proxy_descent_holds_choices_and_moves_towards_real_plugin_targets(tmp_path, amsynth_path):
    """training.refine.ProxyRefiner.descend (the fit's model+proxy_refine row): from presets whose
    continuous values are off, Adam through the proxy with the categorical choices held; each
    target keeps its point of least proxy distance, so that distance never rises, and the
    re-rendered plugin distance falls. A fixed seed repeats the result bit for bit."""
    from training.data import EngineRenderer, sample_presets, spec_of
    from training.evaluate_core import audio_metrics, proxy_refine
    from training.heads import head_layout
    from training.proxy_search import proxy_distances

    cfg = _short_config(tmp_path)
    spec = spec_of("amsynth")
    layout = head_layout(spec, cfg.data.frozen)
    targets = sample_presets(spec, np.random.default_rng(3), 8, frozen=cfg.data.frozen)
    cont = list(layout.continuous)
    start = targets.copy()
    start[:, cont] = np.clip(start[:, cont] + np.random.default_rng(4).normal(0.0, 0.15, (8, len(cont))), 0.0, 1.0)
    start = spec.snap_normalized(start)
    with EngineRenderer(cfg.data) as renderer:
        target_audio, ok = renderer.render(targets)
        assert ok.all()
        # the tiny fit's evaluation shape (tests/test_training.py): one compilation serves both
        found, seconds = proxy_refine(cfg.data, (128, 512), start, target_audio, 12, 0.3, batch_size=4)
        again, _ = proxy_refine(cfg.data, (128, 512), start, target_audio, 12, 0.3, batch_size=4)
        before, _ = renderer.render(start)
        after, ok = renderer.render(found)
        assert ok.all()
    np.testing.assert_array_equal(found, again)
    assert seconds > 0
    np.testing.assert_array_equal(spec.category_of(found), spec.category_of(start))  # choices held
    d_start = proxy_distances(cfg.data, start, target_audio)
    d_found = proxy_distances(cfg.data, found, target_audio)
    assert np.all(d_found <= d_start + 1e-3), (d_start, d_found)  # the start itself is a candidate
    mss_before = audio_metrics(before, target_audio, cfg.data.sample_rate)["mss"]
    mss_after = audio_metrics(after, target_audio, cfg.data.sample_rate)["mss"]
    # the proxy tracks the plugin, so the descent's gain holds on the plugin
    np.testing.assert_allclose(mss_after, d_found, rtol=0.05, atol=0.02)  # measured max 3e-5
    assert np.mean(mss_after) < 0.7 * np.mean(mss_before), (mss_before, mss_after)  # measured 2.27 -> 1.30
