"""The synth contract, checked the same way on every registered synth (and a probed VST plugin).

For each synth: the spec round trip, the real engine's output (shape, channels, finite,
deterministic or flagged as not), preset write -> read -> render equality, and where a proxy
exists, finite gradients at the range edges and proxy-vs-engine agreement on a few presets.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from proxies.notes import Note
from proxies.synth import ProxyRender, get_synth, list_synths, note_off_sample, render_samples

SR = 16000
DURATION = 0.5
NOTE = Note(60, 100, 0.0, 0.3)

#: proxy-vs-engine SNR (dB) every reproducible preset must reach in exact mode (median)
PROXY_SNR_DB = {"amsynth": 60.0, "dexed": 60.0}


def _snr(ref: np.ndarray, est: np.ndarray) -> np.ndarray:
    ref = ref.reshape(len(ref), -1).astype(np.float64)
    err = ref - est.reshape(len(est), -1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(np.sum(ref ** 2, 1) / np.maximum(np.sum(err ** 2, 1), 1e-30))


@pytest.fixture(scope="module", params=list_synths())
def synth(request):
    return get_synth(request.param)


def test_registry_is_lazy():
    import subprocess

    code = ("import sys, proxies.synth as s; [s.get_synth(n) for n in s.list_synths()]; "
            "print(sorted(m for m in ('jax', 'dawdreamer', 'dexed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"importing the registry and every synth loaded {out.stdout.strip()}"


def test_unknown_synth_names_the_choices():
    from proxies.synth import SynthNotFoundError

    with pytest.raises(SynthNotFoundError, match="expected one of: amsynth"):
        get_synth("amsytnh")


def test_one_place_derives_lengths():
    assert render_samples(889 / 44100, 44100) == 889
    assert note_off_sample(0.3, 16000) == 4800
    from proxies.synth import NoteConvention

    block = NoteConvention(note_off_quantum=64, note_off_rounding="ceil")
    assert note_off_sample(0.3001, 16000, block) == 4864 and note_off_sample(0.3, 16000, block) == 4800
    assert ProxyRender(SR, DURATION, 0.3).n_samples == render_samples(DURATION, SR)


def test_spec_round_trip(synth):
    spec = synth.spec
    rng = np.random.default_rng(0)
    n = synth.sample_presets(rng, 64)
    assert n.shape == (64, spec.n_params) and np.all((n >= 0) & (n <= 1))
    assert np.allclose(np.asarray(spec.snap_normalized(n), np.float64), n, atol=1e-6), "the prior must snap"
    back = spec.internal_to_normalized(spec.normalized_to_internal(n))
    assert np.allclose(back, n, atol=1e-6)
    assert len(set(spec.names)) == spec.n_params
    for i in spec.categorical_indices:
        p = spec.params[i]
        assert len(p.choices) == p.n_steps + 1


@pytest.fixture(scope="module")
def rendered(synth):
    """Engine renders of 4 prior presets and of the same presets in another order."""
    presets = synth.sample_presets(np.random.default_rng(1), 4)
    engine = synth.open_engine(SR, workers=1)
    try:
        a, fa = engine.render(presets, (NOTE,), DURATION)
        b, fb = engine.render(presets[::-1], (NOTE,), DURATION)
        per_row, _ = engine.render(presets[:2], [(NOTE,), (Note(48, 80, 0.0, 0.3),)], DURATION)
        reproducible = engine.reproducible(presets)
    finally:
        engine.close()
    return presets, a, fa, b[::-1], fb, per_row, reproducible


def test_engine_output(synth, rendered):
    presets, a, fa, b, fb, per_row, reproducible = rendered
    assert not fa and not fb
    assert a.shape == (4, synth.channels, render_samples(DURATION, SR)) and a.dtype == np.float32
    assert np.all(np.isfinite(a))
    assert np.array_equal(a[reproducible], b[reproducible]), "a reproducible preset rendered differently"
    assert np.array_equal(per_row[0], a[0]), "per-preset notes: the first preset plays the shared note"
    assert not np.array_equal(per_row[1], a[1]) or np.max(np.abs(a[1])) == 0, "the second plays another note"


def test_preset_write_read_render(synth, tmp_path):
    presets = synth.sample_presets(np.random.default_rng(2), 2)
    out = tmp_path / f"patch{synth.presets.write_suffix}"
    written = synth.presets.write(str(out), "Contract Test", presets[0])
    assert str(out) in written and all(__import__("os").path.isfile(p) for p in written)
    name, back = synth.presets.read(str(out), 0)  # the written preset (the first slot of a bank)
    assert back.shape == (synth.spec.n_params,)
    sound = list(synth.spec.learned_indices)  # a writer may set what does not sound (a DX7 voice's name)
    assert np.allclose(back[sound], presets[0][sound], atol=1e-6), "write -> read changed the preset"
    engine = synth.open_engine(SR, workers=1)
    try:
        audio, failures = engine.render(np.stack([presets[0], back]), (NOTE,), DURATION)
    finally:
        engine.close()
    assert not failures
    if bool(synth.reproducible(presets[:1])[0]):
        assert np.array_equal(audio[0], audio[1]), "the written preset renders differently"


def test_proxy_agrees_and_has_finite_gradients(synth, rendered):
    if synth.proxy is None:
        pytest.skip(f"{synth.name} has no proxy (the methods that need none are used; see test_training)")
    import jax
    import jax.numpy as jnp

    from diffsynth.losses import multi_resolution_stft_loss
    from proxies.synth import proxy_renderer

    presets, a, _, _, _, _, reproducible = rendered
    config = ProxyRender(SR, DURATION, NOTE.hold_s)
    render = jax.jit(proxy_renderer(synth, config))
    pitch = jnp.full((len(presets),), NOTE.pitch, jnp.int32)
    vel = jnp.full((len(presets),), NOTE.velocity, jnp.int32)
    proxy_audio = np.asarray(render(jnp.asarray(presets, jnp.float32), pitch, vel))
    assert proxy_audio.shape == a.shape
    snr = _snr(a[reproducible], proxy_audio[reproducible])
    assert np.median(snr) >= PROXY_SNR_DB.get(synth.name, 30.0), f"proxy vs engine SNR {snr}"

    proxy = synth.proxy()
    target = jnp.asarray(a[:1])

    def loss(x, probs):
        audio = proxy.render(proxy.to_controls(x, probs), pitch[:1], vel[:1], config, None)
        return jnp.mean(multi_resolution_stft_loss(audio, target))

    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))  # one compilation for the three points
    for edge in (0.0, 0.5, 1.0):
        x = jnp.asarray(np.asarray(synth.spec.snap_normalized(np.full((1, synth.spec.n_params), edge))), jnp.float32)
        probs = {k: v.astype(jnp.float32) for k, v in proxy.one_hot(x).items()}

        value, (gx, gp) = value_and_grad(x, probs)
        assert np.isfinite(float(value))
        assert np.all(np.isfinite(np.asarray(gx))), f"non-finite gradient at normalized {edge}"
        assert all(np.all(np.isfinite(np.asarray(g))) for g in gp.values())
