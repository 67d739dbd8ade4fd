"""Calibration layer: normalized <-> proxy parameters, residual, render_normalized."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from proxies.amsynth import calibration as cal
from proxies.amsynth.proxy import CATEGORICAL_SIZES
from proxies.amsynth.spec import AMSYNTH

I = AMSYNTH.index_of


@pytest.fixture(scope="module")
def presets() -> np.ndarray:
    rng = np.random.default_rng(0)
    p = AMSYNTH.sample_normalized(rng, 64)
    edges = np.stack([np.zeros(AMSYNTH.n_params), np.ones(AMSYNTH.n_params), AMSYNTH.defaults_normalized])
    return np.concatenate([p, edges]).astype(np.float32)


def test_default_preset_physical_values():
    p = cal.to_proxy(AMSYNTH.defaults_normalized[None].astype(np.float32))
    assert float(p.filter_cutoff_mult[0]) == 64.0  # 16^1.5
    assert float(p.filter_q[0]) == 0.5  # res 0: r = 2, NOT Butterworth
    assert np.isclose(float(p.master_gain[0]), 0.67 ** 2, rtol=1e-6)
    assert float(p.amp_attack_s[0]) == np.float32(0.0005)
    assert float(p.lfo_pitch_depth[0]) == 0.0 and float(p.lfo_amp_depth[0]) == 0.0
    assert float(p.distortion_exponent[0]) == 1.0
    assert float(p.osc2_octave[0]) == 0.0 and float(p.osc2_semitones[0]) == 0.0
    np.testing.assert_array_equal(np.asarray(p.probs["osc1_waveform"][0]), [0, 0, 1, 0, 0])  # saw
    np.testing.assert_array_equal(np.asarray(p.probs["filter_slope"][0]), [0, 1])  # 24 dB


def test_laws_match_the_spec_table():
    n = np.zeros((1, AMSYNTH.n_params), np.float32)
    n[0, I("amp_attack")] = 0.4  # (2.5*0.4)^3 + 0.0005 = 1.0005 s
    n[0, I("lfo_freq")] = 0.5  # 56.25 * 0.25
    n[0, I("freq_mod_amount")] = 0.5  # a = n^3
    n[0, I("osc2_range")] = 5 / 7  # +2 octaves
    n[0, I("osc2_pitch")] = 0.75  # +6 semitones
    n[0, I("reverb_roomsize")] = 1.0
    n[0, I("distortion_crunch")] = 1.0
    p = cal.to_proxy(n)
    assert np.isclose(float(p.amp_attack_s[0]), 1.0005, rtol=1e-6)
    assert np.isclose(float(p.lfo_hz[0]), 14.0625, rtol=1e-6)
    assert np.isclose(float(p.lfo_pitch_depth[0]), 0.125, rtol=1e-5)
    assert float(p.osc2_octave[0]) == 2.0 and float(p.osc2_semitones[0]) == 6.0
    assert np.isclose(float(p.reverb_room[0]), 0.98, rtol=1e-6)
    assert np.isclose(float(p.distortion_exponent[0]), 0.1, rtol=1e-5)


def test_round_trip_normalized_proxy_normalized(presets):
    back = np.asarray(cal.from_proxy(cal.to_proxy(presets)))
    snapped = AMSYNTH.snap_normalized(presets)
    cont = list(AMSYNTH.continuous_indices)
    stepped = [i for i in range(AMSYNTH.n_params) if i not in cont]
    # freq_mod_amount near 0: the plugin's own float32 law (cv = v^3 - 1, a = cv/2 + 0.5) keeps
    # only ~1e-7 absolute of a = n^3, so its inverse is coarse there.
    np.testing.assert_allclose(back[:, cont], snapped[:, cont], atol=1e-4)
    np.testing.assert_allclose(back[:, stepped], snapped[:, stepped], atol=1e-6)


def test_round_trip_proxy_normalized_proxy(presets):
    p1 = cal.to_proxy(jnp.asarray(presets))
    p2 = cal.to_proxy(cal.from_proxy(p1))
    for name in p1._fields:
        a, b = getattr(p1, name), getattr(p2, name)
        if name == "probs":
            for k in a:
                np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
        else:
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-4, atol=2e-6, err_msg=name)


def test_numpy_path_matches_jax_path(presets):
    a = cal.to_proxy(presets)  # plugin-exact: float64 laws rounded to float32
    b = cal.to_proxy(jnp.asarray(presets))  # float32 laws, differentiable
    for name in a._fields:
        if name != "probs":
            np.testing.assert_allclose(np.asarray(getattr(b, name)), np.asarray(getattr(a, name)),
                                       rtol=3e-6, atol=1e-7, err_msg=name)


def test_relaxed_probs_and_ordered_steps():
    n = jnp.asarray(AMSYNTH.defaults_normalized[None].astype(np.float32))
    probs = {"osc1_waveform": jnp.asarray([[0.5, 0.0, 0.5, 0.0, 0.0]]),
             "osc2_range": jax.nn.one_hot(jnp.asarray([5]), 8), "osc2_pitch": jnp.full((1, 25), 1 / 25)}
    p = cal.to_proxy(n, probs)
    np.testing.assert_allclose(np.asarray(p.probs["osc1_waveform"]), [[0.5, 0, 0.5, 0, 0]])
    assert float(p.osc2_octave[0]) == 2.0  # expected value of the one-hot
    assert abs(float(p.osc2_semitones[0])) < 1e-5  # uniform over -12..12
    # relaxed mode without probabilities for the ordered steps: continuous values
    n2 = n.at[0, I("osc2_pitch")].set(0.52)
    p2 = cal.to_proxy(n2, {})
    assert np.isclose(float(p2.osc2_semitones[0]), 24 * 0.52 - 12, atol=1e-5)
    assert float(cal.to_proxy(n2).osc2_semitones[0]) == 0.0  # exact mode snaps


def test_bad_inputs_are_rejected_with_clear_errors():
    n = AMSYNTH.defaults_normalized[None].astype(np.float32)
    with pytest.raises(ValueError, match="unknown key"):
        cal.to_proxy(n, {"osc3_waveform": jnp.ones((1, 5)) / 5})
    with pytest.raises(ValueError, match="expected shape"):
        cal.to_proxy(n, {"osc1_waveform": jnp.ones((1, 4)) / 4})
    with pytest.raises(ValueError, match="41"):
        cal.to_proxy(np.zeros((2, 40), np.float32))
    with pytest.raises(ValueError, match="batch"):
        cal.to_proxy(np.zeros(41, np.float32))


def test_residual_identity_inverse_and_json(tmp_path, presets):
    x = np.linspace(0, 1, 9)
    res = cal.Residual(9, {"filter_cutoff": x ** 1.2, "osc2_detune": 0.5 * x + 0.25 * x ** 2 + 0.1})
    n = jnp.asarray(presets)
    fwd = res.forward(n)
    np.testing.assert_allclose(np.asarray(res.inverse(fwd)), presets, atol=2e-6)
    # untouched parameters pass through bit for bit
    other = [i for i in range(AMSYNTH.n_params) if i not in (I("filter_cutoff"), I("osc2_detune"))]
    np.testing.assert_array_equal(np.asarray(fwd)[:, other], presets[:, other])
    # to_proxy / from_proxy apply and invert it
    back = np.asarray(cal.from_proxy(cal.to_proxy(n, residual=res), residual=res))
    np.testing.assert_allclose(back[:, I("filter_cutoff")], presets[:, I("filter_cutoff")], atol=1e-4)
    path = tmp_path / "res.json"
    cal.save_residual(res, path, {"note": "test"})
    res2 = cal.load_residual(path)
    assert set(res2.maps) == set(res.maps)
    np.testing.assert_allclose(res2.maps["filter_cutoff"], res.maps["filter_cutoff"])
    assert cal.load_residual(tmp_path / "missing.json").is_identity
    with pytest.raises(ValueError, match="strictly increasing"):
        cal.Residual(9, {"filter_cutoff": x[::-1]})
    with pytest.raises(ValueError, match="continuous"):
        cal.Residual(9, {"filter_type": x})
    with pytest.raises(ValueError, match="unknown keys"):
        cal.Residual.from_json({"knots": 9, "maps": {}, "extra": 1})


def test_shipped_residual_file_is_valid():
    assert cal.RESIDUAL_PATH.exists(), "run `python -m proxies.calibrate amsynth` to create it"
    data = json.loads(cal.RESIDUAL_PATH.read_text())
    res = cal.Residual.from_json(data)
    assert "meta" in data and "loss_identity" in data["meta"]
    n = np.linspace(0, 1, 41, dtype=np.float32)[:, None].repeat(41, 1)
    assert np.all(np.diff(np.asarray(res.forward(jnp.asarray(n))), axis=0) >= 0)  # monotone


def test_one_hot_probs_cover_all_categoricals(presets):
    probs = cal.one_hot_probs(jnp.asarray(presets))
    assert set(probs) == set(CATEGORICAL_SIZES)
    for name, k in CATEGORICAL_SIZES.items():
        assert probs[name].shape == (len(presets), k)
        np.testing.assert_array_equal(np.asarray(probs[name]).sum(-1), 1.0)
        np.testing.assert_array_equal(np.argmax(np.asarray(probs[name]), -1),
                                      AMSYNTH.category_of(presets)[:, I(name)])
