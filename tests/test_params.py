"""The parameter description: conversions, snapping, sampling, and agreement with the real plugin."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from proxies.amsynth.spec import AMSYNTH, uses_noise, uses_sync
from proxies.params import ParamSpec, SynthSpec

GRID = np.arange(41) / 40.0


def test_table_shape_and_defaults():
    assert AMSYNTH.n_params == 41
    assert AMSYNTH.names[0] == "amp_attack" and AMSYNTH.names[40] == "portamento_mode"
    assert AMSYNTH.index_of("filter_cutoff") == 11
    assert AMSYNTH["master_vol"].default == pytest.approx(0.67)
    # the declared defaults are the plugin's (shared/amsynth/param_calibration.csv)
    n = AMSYNTH.defaults_normalized
    assert n[AMSYNTH.index_of("osc2_range")] == pytest.approx(3 / 7)
    assert n[AMSYNTH.index_of("filter_env_amount")] == pytest.approx(0.5)
    assert len(AMSYNTH.categorical_indices) == 10
    assert set(AMSYNTH.learned_indices) == set(range(41)) - {31, 32, 40}


def test_unknown_name_is_a_clear_error():
    with pytest.raises(KeyError, match="no parameter named 'cutoff'.*filter_cutoff"):
        AMSYNTH.index_of("cutoff")


def test_snapping_is_c_roundf():
    # osc1_waveform: n=0.125 -> 0.5 -> 1 (half rounds up); n=0.625 -> 2.5 -> 3
    i = AMSYNTH.index_of("osc1_waveform")
    x = np.tile(AMSYNTH.defaults_normalized, (4, 1))
    x[:, i] = [0.125, 0.625, 0.1249, 0.6249]
    v = AMSYNTH.normalized_to_internal(x)[:, i]
    np.testing.assert_array_equal(v, [1, 3, 0, 2])
    # osc2_pitch: negative side also rounds half away from zero in (v - min)/step space
    j = AMSYNTH.index_of("osc2_pitch")
    x[:, j] = [0.0, 0.5, 1.0, 11.5 / 24]
    np.testing.assert_array_equal(AMSYNTH.normalized_to_internal(x)[:, j], [-12, 0, 12, 0])


def test_numpy_and_jax_agree():
    rng = np.random.default_rng(0)
    n = rng.random((64, 41))
    v_np = AMSYNTH.normalized_to_internal(n)
    v_jx = np.asarray(AMSYNTH.normalized_to_internal(jnp.asarray(n), xp=jnp))
    np.testing.assert_array_equal(v_np, v_jx)
    cv_np = AMSYNTH.internal_to_control(v_np)
    cv_jx = np.asarray(AMSYNTH.internal_to_control(jnp.asarray(v_np), xp=jnp))
    np.testing.assert_allclose(cv_jx, cv_np, rtol=2e-6, atol=1e-6)
    back = AMSYNTH.internal_to_normalized(v_np)
    np.testing.assert_allclose(AMSYNTH.normalized_to_internal(back), v_np, rtol=0, atol=1e-6)


def test_control_gradients_finite_at_edges():
    def total(n):
        v = AMSYNTH.normalized_to_internal_continuous(n, xp=jnp)
        return jnp.sum(AMSYNTH.internal_to_control(v, xp=jnp))

    for edge in (0.0, 0.5, 1.0):
        g = jax.grad(total)(jnp.full((41,), edge, jnp.float32))
        assert np.all(np.isfinite(np.asarray(g))), edge
    # d cv / d n of the attack law at n = 0.5: 3 (2.5 n)^2 * 2.5
    g = jax.grad(total)(jnp.full((41,), 0.5, jnp.float32))
    assert float(g[0]) == pytest.approx(3 * 1.25**2 * 2.5, rel=1e-5)


def test_sampling_is_deterministic_and_on_grid():
    a = AMSYNTH.sample_normalized(np.random.default_rng(7), 500)
    b = AMSYNTH.sample_normalized(np.random.default_rng(7), 500)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (500, 41) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_allclose(AMSYNTH.snap_normalized(a), a, atol=1e-6)
    for i in (31, 32, 40):  # fixed prior: portamento and keyboard modes stay at defaults
        assert np.all(a[:, i] == AMSYNTH.defaults_normalized[i])
    wf = AMSYNTH.category_of(a)[:, AMSYNTH.index_of("osc1_waveform")]
    assert set(np.unique(wf)) == {0, 1, 2, 3, 4}
    frac_noise = uses_noise(a).mean()
    assert 0.4 < frac_noise < 0.8  # 1 - (3/5)^2 (5/7) = 0.743 in expectation
    assert 0.15 < uses_sync(a).mean() < 0.3  # 1/2 * 2/5


def test_validation_errors():
    with pytest.raises(ValueError, match="last axis holds 41"):
        AMSYNTH.normalized_to_internal(np.zeros(40))
    bad = AMSYNTH.defaults_normalized.copy()
    bad[11] = np.nan
    with pytest.raises(ValueError, match="filter_cutoff.*not finite"):
        AMSYNTH.check_normalized(bad)
    bad[11] = 1.2
    with pytest.raises(ValueError, match="filter_cutoff.*outside \\[0, 1\\]"):
        AMSYNTH.check_normalized(bad)
    v = AMSYNTH.defaults_internal.copy()
    v[10] = 17
    with pytest.raises(ValueError, match="filter_env_amount.*outside its range \\[-16, 16\\]"):
        AMSYNTH.check_internal(v)
    with pytest.raises(ValueError, match="choices"):
        ParamSpec("x", 0, 0, 2, 1, choices=("a", "b"))
    with pytest.raises(ValueError, match="index 1, expected 0"):
        SynthSpec("s", (ParamSpec("x", 1, 0, 1),))


@pytest.mark.plugin
def test_control_values_match_plugin_display_all_cells(amsynth_path):
    """41 parameters x 41 normalized steps: our control value is the plugin's own text."""
    import dawdreamer as daw

    engine = daw.RenderEngine(44100, 512)
    synth = engine.make_plugin_processor("amsynth_sweep", amsynth_path)
    assert [synth.get_parameter_name(i) for i in range(41)] == list(AMSYNTH.names)
    matches, mismatches = 0, []
    for i in range(41):
        x = np.tile(AMSYNTH.defaults_normalized, (len(GRID), 1))
        x[:, i] = GRID
        cv = AMSYNTH.normalized_to_control(x)[:, i]
        for n, c in zip(GRID, cv):
            synth.set_parameter(i, float(n))
            text = synth.get_parameter_text(i)
            # the plugin prints `std::ostream << float`: %g, 6 significant digits
            if text == f"{float(c):g}":
                matches += 1
            else:
                mismatches.append((AMSYNTH.names[i], n, text, f"{float(c):g}"))
    assert mismatches == [] and matches == 1681
