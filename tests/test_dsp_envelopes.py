"""diffsynth.envelopes against a per-sample NumPy transliteration of amsynth's ADSR (README §6.6)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest


from diffsynth.envelopes import adsr, adsr_exponential, sequential_float32_ramp
from diffsynth.oscillators import phase_from_frequency, sine
from gradcheck import spectral_l2

SR = 44100
f32 = np.float32
UINT_MAX = 2**32 - 1


def adsr_ref(attack, decay, sustain, release, n, sr=SR, note_on=0, note_off=None, v0=0.0, rate=0.005):
    """ADSR.cpp, float32, one sample per process() call; events before the sample."""
    a, d, s, r = f32(attack), f32(decay), f32(sustain), f32(release)
    srf = f32(sr)
    st = {"state": "off", "value": f32(v0), "inc": f32(0), "left": UINT_MAX, "z": f32(1)}

    def div(num, frames):
        return f32(num / f32(frames)) if frames > 0 else f32(np.inf)

    out = np.empty(n, np.float32)
    for i in range(n):
        if i == note_on:
            st["state"], st["left"] = "attack", int(f32(a * srf))
            target = s if d <= f32(0.0005) else f32(1.0)
            st["inc"] = div(target - st["value"], st["left"])
        if note_off is not None and i == max(note_off, note_on):
            st["state"], st["left"] = "release", int(f32(r * srf))
            st["inc"] = div(f32(0) - st["value"], st["left"])
        frames = 1
        written = False
        while frames:
            count = min(frames, st["left"])
            if count:
                out[i] = st["value"]
                written = True
                if st["state"] == "sustain":
                    st["z"] = f32(st["z"] + f32(f32(s - st["z"]) * f32(rate)))
                    st["value"] = st["z"]
                else:
                    st["value"] = f32(st["value"] + st["inc"])
            st["left"] -= count
            if st["left"] == 0:
                if st["state"] == "attack":
                    st["state"], st["left"] = "decay", int(f32(d * srf))
                    st["inc"] = div(s - st["value"], st["left"])
                elif st["state"] == "decay":
                    st["z"], st["state"], st["left"], st["inc"] = st["value"], "sustain", UINT_MAX, f32(0)
                elif st["state"] == "sustain":
                    st["left"] = UINT_MAX
                else:
                    st["state"], st["value"], st["left"], st["inc"] = "off", f32(0), UINT_MAX, f32(0)
            frames -= count
        if not written:
            out[i] = st["value"]
    return out


N = 4096
# (attack_s, decay_s, sustain, release_s, note_on, note_off, initial_value)
CASES = {
    "full_cycle": (0.01, 0.02, 0.5, 0.03, 0, 3000, 0.0),
    "off_in_attack": (0.05, 0.02, 0.5, 0.01, 100, 1000, 0.0),
    "off_in_decay": (0.01, 0.05, 0.3, 0.02, 0, 700, 0.0),
    "half_ms_segments": (0.0005, 0.0005, 0.7, 0.0005, 10, 2000, 0.0),
    "sustain_zero": (0.01, 0.02, 0.0, 0.01, 0, 2500, 0.0),
    "sustain_one": (0.03, 0.01, 1.0, 0.02, 0, 3500, 0.0),
    "decay_min_targets_sustain": (0.02, 0.0005, 0.6, 0.01, 0, 3000, 0.0),
    "zero_times": (0.0, 0.0, 1.0, 0.0, 5, 100, 0.0),
    "held": (0.03, 0.01, 0.8, 0.02, 0, None, 0.0),
    "retrigger_from_level": (0.01, 0.02, 0.4, 0.01, 50, 2500, 0.6),
    "off_at_on": (0.01, 0.02, 0.4, 0.01, 20, 20, 0.0),
}


def _run(case, exact):
    a, d, s, r, on, off, v0 = case
    return np.asarray(adsr(a, d, s, r, N, SR, on, off, initial_value=v0, exact_rounding=exact))


@pytest.mark.parametrize("name", sorted(CASES))
def test_adsr_matches_amsynth(name):
    a, d, s, r, on, off, v0 = CASES[name]
    ref = adsr_ref(a, d, s, r, N, note_on=on, note_off=off, v0=v0)
    np.testing.assert_allclose(_run(CASES[name], False), ref, atol=3e-5)  # closed-form lines
    np.testing.assert_array_equal(_run(CASES[name], True), ref)  # float32 accumulation emulated


def test_adsr_long_segments_exact_rounding():
    n = 2 * SR
    ref = adsr_ref(0.8, 0.6, 0.4, 0.5, n, note_off=int(1.6 * SR))
    closed = np.asarray(adsr(0.8, 0.6, 0.4, 0.5, n, SR, 0, int(1.6 * SR)))
    exact = np.asarray(adsr(0.8, 0.6, 0.4, 0.5, n, SR, 0, int(1.6 * SR), exact_rounding=True))
    np.testing.assert_array_equal(exact, ref)
    assert 1e-5 < np.abs(closed - ref).max() < 1e-3  # the drift exact_rounding removes


def test_sequential_float32_ramp_matches_loop():
    rng = np.random.default_rng(1)
    starts = np.concatenate([[0, 0, 1, 0.7, 0.25, 0.999], rng.uniform(0, 1, 10)]).astype(np.float32)
    incs = np.concatenate([[1 / 176400, 1 / 22, -1 / 50000, -0.4 / 30000, -0.25 / 3, 0.0],
                           rng.uniform(-1, 1, 10) * 10 ** rng.uniform(-7, -2, 10)]).astype(np.float32)
    n = 20000
    got = np.asarray(sequential_float32_ramp(starts, incs, n))
    for k in range(len(starts)):
        v = starts[k]
        ref = np.empty(n, np.float32)
        for j in range(n):
            ref[j] = v
            v = f32(v + incs[k])
        np.testing.assert_array_equal(got[k], ref, err_msg=f"start={starts[k]} inc={incs[k]}")


def test_adsr_batched_jit_vmap_shapes():
    a = jnp.array([[0.01, 0.02], [0.001, 0.05], [0.0005, 0.1]])
    out = adsr(a, 0.02, 0.5, 0.01, 512, SR, 0, jnp.array([100, 300]))
    assert out.shape == (3, 2, 512)
    vm = jax.vmap(lambda x: adsr(x, 0.02, 0.5, 0.01, 512, SR, 0, 300))(a[:, 1])
    np.testing.assert_array_equal(np.asarray(vm), np.asarray(out[:, 1]))
    ex = adsr_exponential(a, 0.02, 0.5, 0.01, 512, SR, 0, 300)
    assert ex.shape == (3, 2, 512) and np.isfinite(np.asarray(ex)).all()
    exact = adsr(a, 0.02, 0.5, 0.01, 512, SR, 0, jnp.array([100, 300]), exact_rounding=True)
    np.testing.assert_allclose(np.asarray(exact), np.asarray(out), atol=1e-5)


def test_adsr_exponential_shape():
    n = 8192
    e = np.asarray(adsr_exponential(0.01, 0.02, 0.5, 0.03, n, SR, 0, 4000))
    i_att = int(0.01 * SR)
    assert e[0] == 0 and abs(e[i_att] - 1.0) < 2e-3  # attack lasts attack_s
    assert abs(e[3999] - (0.5 + 0.5 * np.exp(-(3999 / SR - 0.01) / 0.02))) < 1e-4  # decay time constant
    assert abs(e[4000 + int(0.03 * SR)] - e[4000] * np.exp(-1)) < 2e-3  # release time constant


@jax.jit
def _env_grads(params, note_off):
    def total(p, off):
        lin = adsr(p[0], p[1], p[2], p[3], 1024, SR, 0, off)
        ex = adsr_exponential(p[0], p[1], p[2], p[3], 1024, SR, 0, off)
        return jnp.sum(lin**2) + jnp.sum(ex**2)

    return jax.grad(total, argnums=(0, 1))(params, note_off)


def test_adsr_gradients_finite_at_edges():
    for att in (0.0, 0.0005, 0.01):
        for sus in (0.0, 0.5, 1.0):
            for off in (0.0, 100.0, 700.0, 5000.0):
                p = jnp.array([att, 0.0005 if att == 0.0005 else 0.003, sus, 0.0005], jnp.float32)
                g_p, g_off = _env_grads(p, jnp.float32(off))
                assert np.isfinite(np.asarray(g_p)).all() and np.isfinite(float(g_off)), (att, sus, off)


# ---------------------------------------------------------------------------------------
# Gradients vs finite differences
# ---------------------------------------------------------------------------------------

N_GRAD = 4096


_CARRIER = sine(phase_from_frequency(jnp.full(N_GRAD, 330.0), SR))


def _voice(p, kind):
    env_fn = adsr if kind == "linear" else adsr_exponential
    return env_fn(p[0], p[1], p[2], p[3], N_GRAD, SR, 0, p[4]) * _CARRIER


_TARGET = {k: _voice(jnp.array([0.012, 0.02, 0.35, 0.015, 2600.0]), k) for k in ("linear", "exponential")}


_VALUE_AND_GRAD = {k: jax.jit(jax.value_and_grad(lambda p, k=k: spectral_l2(_voice(p, k), _TARGET[k])))
                   for k in ("linear", "exponential")}
_GRADS = {k: (lambda p, k=k: _VALUE_AND_GRAD[k](p)[1]) for k in _VALUE_AND_GRAD}
_LOSSES = {k: (lambda p, k=k: _VALUE_AND_GRAD[k](p)[0]) for k in _VALUE_AND_GRAD}


@pytest.mark.parametrize("kind", ["linear", "exponential"])
def test_envelope_gradients_match_finite_differences(kind):
    # Times sit half-way between integer frame counts, and their steps are whole frames,
    # so the floored forward moves by exactly +-k frames (straight-through is checked
    # against the slope of the piecewise-constant loss over 2k frames).
    k = 2
    points = [
        [300.5 / SR, 700.5 / SR, 0.6, 500.5 / SR, 2000.5],
        [900.5 / SR, 400.5 / SR, 0.2, 900.5 / SR, 3100.5],
    ]
    for p in points:
        p = np.array(p, np.float64)
        g = np.asarray(_GRADS[kind](jnp.asarray(p, jnp.float32)), np.float64)
        for i in range(5):
            h = 1e-3 if i == 2 else (k / SR if i != 4 else float(k))
            pp, pm = p.copy(), p.copy()
            pp[i] += h
            pm[i] -= h
            fd = (float(_LOSSES[kind](jnp.asarray(pp, jnp.float32)))
                  - float(_LOSSES[kind](jnp.asarray(pm, jnp.float32)))) / (2 * h)
            assert np.isfinite(g[i])
            assert abs(g[i] - fd) <= 1e-2 * abs(fd) + 1e-6 * np.abs(g).max(), (kind, p, i, g[i], fd)
