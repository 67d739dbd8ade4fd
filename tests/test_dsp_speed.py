"""The speed work of diffsynth changes no result: process settings (diffsynth.runtime), Freeverb's
ring-buffer forward and hand-written backward, the per-example spectral loss with precomputed
target spectra, the limiter's and smoother's custom VJPs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffsynth import effects as fx
from diffsynth import losses as L
from diffsynth import runtime
from diffsynth import spectral

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------
# diffsynth.runtime
# ---------------------------------------------------------------------------------------

OURS = f"{runtime.XLA_OPTION}={runtime.XLA_OPTION_VALUE}"


@pytest.mark.parametrize("flags, expected", [
    (None, f"--xla_backend_extra_options={OURS}"),
    ("", f"--xla_backend_extra_options={OURS}"),
    ("--xla_dump_to=/tmp/d", f"--xla_dump_to=/tmp/d --xla_backend_extra_options={OURS}"),
    ("--xla_backend_extra_options=a=1 --x=2", f"--xla_backend_extra_options=a=1,{OURS} --x=2"),
    (f"--xla_backend_extra_options={runtime.XLA_OPTION}=5", f"--xla_backend_extra_options={runtime.XLA_OPTION}=5"),
])
def test_xla_flags_keep_the_users_settings(flags, expected):
    assert runtime.xla_flags_with_option(flags) == expected
    env = {} if flags is None else {"XLA_FLAGS": flags}
    assert runtime.configure_xla(env) is True
    assert env["XLA_FLAGS"] == runtime.xla_flags_with_devices(flags if flags and runtime.XLA_OPTION in flags
                                                              else expected)
    again = env["XLA_FLAGS"]
    assert runtime.configure_xla(env) is True and env["XLA_FLAGS"] == again  # idempotent
    off = {"DIFFSYNTH_RUNTIME": "0"}
    assert runtime.configure_xla(off) is False and "XLA_FLAGS" not in off


@pytest.mark.parametrize("cores, devices", [(1, 1), (2, 2), (3, 2), (6, 4), (8, 8), (64, 8)])
def test_one_cpu_device_per_core_as_a_power_of_two(cores, devices):
    assert runtime.host_device_count(cores) == devices
    flags = runtime.xla_flags_with_devices("--x=1", cores)
    assert flags == ("--x=1" if devices == 1 else f"--x=1 {runtime.HOST_DEVICES_FLAG}={devices}")
    user = f"{runtime.HOST_DEVICES_FLAG}=3"  # the user's count wins
    assert runtime.xla_flags_with_devices(user, cores) == user


def test_this_process_runs_with_the_xla_settings():
    flags = os.environ.get("XLA_FLAGS", "")  # conftest / import diffsynth
    assert runtime.XLA_OPTION in flags and runtime.HOST_DEVICES_FLAG in flags or runtime.host_device_count() == 1
    assert len(jax.local_devices()) == runtime.host_device_count()


def _python(code: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "GLIBC_TUNABLES", runtime.REEXEC_MARKER, runtime.OPT_OUT)}
    env.update(extra)
    return env


_REEXEC = """
    import importlib.util, json, os, sys
    spec = importlib.util.spec_from_file_location("runtime", "diffsynth/runtime.py")  # without importing JAX
    runtime = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runtime)
    reexec_with_tunables = runtime.reexec_with_tunables
    print("start", flush=True)
    reexec_with_tunables()
    print(json.dumps({k: os.environ.get(k) for k in ("GLIBC_TUNABLES", "XLA_FLAGS", "DIFFSYNTH_REEXECED")}))
"""


@pytest.mark.skipif(not runtime._glibc_supports_hugetlb(), reason="glibc < 2.35: no malloc hugetlb tunable")
def test_reexec_sets_the_malloc_tunable_once_and_respects_the_user():
    out = _python(_REEXEC, _clean_env())
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines.count("start") == 2  # ran, re-executed once, not again
    env = json.loads(lines[-1])
    assert env["GLIBC_TUNABLES"] == runtime.MALLOC_TUNABLE and env["DIFFSYNTH_REEXECED"] == "1"
    assert OURS in env["XLA_FLAGS"]
    for user in ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, {"GLIBC_TUNABLES": ""}, {"DIFFSYNTH_RUNTIME": "0"}):
        out = _python(_REEXEC, _clean_env(**user))
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines().count("start") == 1, user
        assert json.loads(out.stdout.splitlines()[-1])["GLIBC_TUNABLES"] == user.get("GLIBC_TUNABLES"), user


_PROXY_RUN = """
    import sys
    import numpy as np
    import jax, jax.numpy as jnp
    from diffsynth.losses import multi_resolution_stft_loss
    from proxies.amsynth import calibration as cal
    from proxies.amsynth.spec import AMSYNTH

    config = cal.ProxyConfig(sample_rate=16000, duration_s=0.25, hold_s=0.15)
    n = jnp.asarray(AMSYNTH.sample_normalized(np.random.default_rng(4), 3), jnp.float32)
    target = jnp.asarray(np.random.default_rng(5).standard_normal((3, 2, config.n_samples)) * 0.1, jnp.float32)
    audio = jax.jit(cal.render_normalized, static_argnums=1)(n, config)
    loss = lambda x: jnp.mean(multi_resolution_stft_loss(cal.render_normalized(x, config), target))
    value, grad = jax.jit(jax.value_and_grad(loss))(n)
    np.savez(sys.argv[1], audio=np.asarray(audio), value=np.asarray(value), grad=np.asarray(grad))
"""


@pytest.mark.plugin
def test_process_settings_change_no_output(tmp_path, amsynth_path):
    """The amsynth proxy's render and its spectral-loss gradient with and without the settings."""
    runs = {"off": _clean_env(DIFFSYNTH_RUNTIME="0"),
            "on": runtime.tuned_environment(_clean_env())}
    assert "GLIBC_TUNABLES" not in runs["off"] and runtime.XLA_OPTION in runs["on"]["XLA_FLAGS"]
    procs = {k: subprocess.Popen([sys.executable, "-c", textwrap.dedent(_PROXY_RUN), str(tmp_path / f"{k}.npz")],
                                 env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, env in runs.items()}
    for k, p in procs.items():
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, (k, err[-3000:])
    off, on = np.load(tmp_path / "off.npz"), np.load(tmp_path / "on.npz")
    assert np.abs(off["audio"]).max() > 0
    np.testing.assert_array_equal(on["audio"], off["audio"])
    np.testing.assert_allclose(on["value"], off["value"], rtol=1e-6)
    g_off, g_on = off["grad"], on["grad"]
    assert np.all(np.isfinite(g_off)) and np.abs(g_off).max() > 0
    assert np.max(np.abs(g_on - g_off)) <= 1e-6 * np.max(np.abs(g_off))


# ---------------------------------------------------------------------------------------
# Freeverb: ring-buffer forward, hand-written backward
# ---------------------------------------------------------------------------------------


def _reverb_inputs(batch, n, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(batch + (n,)) * 0.1, jnp.float32)
    room = jnp.asarray(rng.uniform(0.7, 0.98, batch), jnp.float32)
    damp = jnp.asarray(rng.uniform(0.0, 0.4, batch), jnp.float32)
    g = jnp.asarray(rng.standard_normal((2,) + batch + (n,)), jnp.float32)
    return x, room, damp, g


@pytest.mark.parametrize("sample_rate, batch, n, rectify", [(16000, (3,), 3000, True), (22050, (2, 2), 2500, False)])
def test_freeverb_backward_equals_autodiff_of_the_forward(sample_rate, batch, n, rectify):
    delays = fx.freeverb_delay_lengths(sample_rate)
    x, room, damp, g = _reverb_inputs(batch, n)
    doublings = fx.damping_doublings(0.4, max(delays["comb_left"] + delays["comb_right"]))

    def loss(wet_fn):
        return lambda *a: jnp.sum(jnp.stack(wet_fn(*a)) * g)

    custom = jax.jit(jax.value_and_grad(loss(lambda a, r, d: fx._freeverb_wet(a, delays, r, d, rectify, 0.5, doublings)),
                                        argnums=(0, 1, 2)))(x, room, damp)
    plain = jax.jit(jax.value_and_grad(loss(lambda a, r, d: fx._freeverb_forward(a, delays, r, d, rectify, 0.5)),
                                       argnums=(0, 1, 2)))(x, room, damp)
    assert float(custom[0]) == float(plain[0])
    for name, c, p in zip(("input", "room", "damp"), custom[1], plain[1]):
        c, p = np.asarray(c), np.asarray(p)
        assert c.shape == p.shape
        assert np.max(np.abs(c - p)) <= 1e-5 * np.max(np.abs(p)), name


def test_freeverb_forward_with_residuals_is_the_forward():
    delays = fx.freeverb_delay_lengths(16000)
    x, room, damp, _ = _reverb_inputs((2,), 2000, seed=1)
    plain = jax.jit(lambda a, r, d: fx._freeverb_forward(a, delays, r, d, True, 0.5))(x, room, damp)
    (left, right), res = jax.jit(lambda a, r, d: fx._freeverb_forward(a, delays, r, d, True, 0.5, residuals=True))(
        x, room, damp)
    np.testing.assert_array_equal(np.asarray(left), np.asarray(plain[0]))
    np.testing.assert_array_equal(np.asarray(right), np.asarray(plain[1]))
    o, s, masks, store = res
    assert o.shape == s.shape and o.shape[1] == 16 and masks.shape[1:3] == (4, 2) and store.shape == o.shape[:-1]
    assert np.all(np.asarray(o) >= 0) and np.all(np.asarray(s) >= 0)  # rectified


def test_freeverb_batch_is_row_by_row_bit_for_bit():
    """A batch (run in tiles of rows without differentiation) equals its rows rendered one by one."""
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((3, 4, 2000)) * 0.2, jnp.float32)
    p = [jnp.asarray(rng.uniform(0, 1, (3, 4)), jnp.float32) for _ in range(3)]
    f = jax.jit(lambda a, r, d, w: jnp.stack(fx.freeverb(a, 0.5 * a, 22050, r, d, w, 1.0 - w, 0.7)))
    batched = np.asarray(f(x, *p))
    for i in range(3):
        for j in range(4):
            one = np.asarray(f(x[i:i + 1, j:j + 1], *[v[i:i + 1, j:j + 1] for v in p]))
            np.testing.assert_array_equal(batched[:, i, j], one[:, 0, 0])


def test_freeverb_gradient_through_the_public_function_matches_finite_differences():
    """room/damp/wet/input gain through freeverb(), float64 central differences of the jitted forward."""
    n = 2500
    x = jnp.asarray(np.sin(2 * np.pi * 330 * np.arange(n) / 16000) * np.exp(-np.arange(n) / 900), jnp.float32)
    w = jnp.asarray(np.random.default_rng(2).standard_normal((2, n)), jnp.float32)

    def f(p):
        left, right = fx.freeverb(p[3] * x, p[3] * x, 16000, p[0], p[1], p[2], 1.0 - p[2], 0.8, rectify=False)
        return jnp.sum(jnp.stack([left, right]) * w) / n

    p0 = np.array([0.6, 0.5, 0.4, 0.9])
    g = np.asarray(jax.jit(jax.grad(f))(jnp.asarray(p0, jnp.float32)), np.float64)
    fj = jax.jit(f)
    for i in range(4):
        h = 1e-2
        pp, pm = p0.copy(), p0.copy()
        pp[i] += h
        pm[i] -= h
        fd = (float(fj(jnp.asarray(pp, jnp.float32))) - float(fj(jnp.asarray(pm, jnp.float32)))) / (2 * h)
        assert abs(g[i] - fd) <= 2e-2 * abs(fd) + 1e-5, (i, g[i], fd)


# ---------------------------------------------------------------------------------------
# The spectral loss: per example, precomputed targets
# ---------------------------------------------------------------------------------------


def _mrstft_reference(pred, target, fft_sizes, hop_ratio=0.25, linear_weight=1.0, log_weight=1.0, eps=1e-7):
    """The loss as it was written before (whole-batch arrays, two logs)."""
    total = 0.0
    for n_fft in fft_sizes:
        hop = max(1, int(n_fft * hop_ratio))
        p = spectral.power_spectrogram(spectral.stft_frames_major(pred, n_fft, hop)) + eps
        t = spectral.power_spectrogram(spectral.stft_frames_major(target, n_fft, hop)) + eps
        term = linear_weight * jnp.mean(jnp.abs(jnp.sqrt(p) - jnp.sqrt(t)), axis=(-2, -1))
        term = term + log_weight * 0.5 * jnp.mean(jnp.abs(jnp.log(p) - jnp.log(t)), axis=(-2, -1))
        total = total + term
    return total / len(fft_sizes)


def _audio(shape, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(shape[-1]) / 16000
    f0 = rng.uniform(100, 2000, shape[:-1] + (1,))
    return (np.sin(2 * np.pi * f0 * t) * np.exp(-4 * t) + 0.02 * rng.standard_normal(shape)).astype(np.float32)


SIZES = (64, 512)


@pytest.mark.parametrize("p_shape, t_shape", [((3, 2, 2000), (3, 2, 2000)), ((2, 2000), (2000,)),
                                              ((2000,), (2000,)), ((2, 1, 2000), (1, 2, 2000))])
def test_mrstft_loss_equals_the_whole_batch_formula(p_shape, t_shape):
    pred, target = jnp.asarray(_audio(p_shape, 0)), jnp.asarray(_audio(t_shape, 1))
    kw = dict(fft_sizes=SIZES, linear_weight=1.0, log_weight=0.7)

    def value_and_grads(loss):
        def f(p, t):
            per_example = loss(p, t, **kw)
            return jnp.sum(per_example ** 2), per_example
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(pred, target)

    (v, out), g = value_and_grads(L.multi_resolution_stft_loss)
    (ref_v, ref_out), ref_g = value_and_grads(_mrstft_reference)
    assert out.shape == jnp.broadcast_shapes(p_shape[:-1], t_shape[:-1])
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), rtol=1e-6)
    np.testing.assert_allclose(float(v), float(ref_v), rtol=1e-6)
    for a, b in zip(g, ref_g):  # gradients w.r.t. pred and target (broadcast ones summed)
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape
        assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b))


def test_loss_against_precomputed_target():
    pred, target = jnp.asarray(_audio((4, 2, 2048), 2)), jnp.asarray(_audio((4, 2, 2048), 3))
    kw = dict(fft_sizes=SIZES, hop_ratio=0.25, eps=1e-6)
    spectra = jax.jit(lambda t: L.precompute_target(t, **kw))(target)
    assert spectra.batch_shape == (4, 2) and spectra.fft_sizes == SIZES and spectra.n_samples == 2048
    ref = L.multi_resolution_stft_loss(pred, target, linear_weight=0.5, log_weight=2.0, **kw)
    got = jax.jit(lambda p, s: L.loss_against(p, s, linear_weight=0.5, log_weight=2.0))(pred, spectra)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-6)
    # one target for a batch of candidates (what a search does), and its gradient
    one = L.precompute_target(target[0, 0], **kw)
    cands = pred[:, 0]
    np.testing.assert_allclose(np.asarray(L.loss_against(cands, one)),
                               np.asarray(_mrstft_reference(cands, target[0, 0], **{k: v for k, v in kw.items()})),
                               rtol=1e-6)
    ga = jax.jit(jax.grad(lambda p: jnp.sum(L.loss_against(p, one))))(cands)
    gr = jax.jit(jax.grad(lambda p: jnp.sum(_mrstft_reference(p, target[0, 0], **kw))))(cands)
    assert np.max(np.abs(np.asarray(ga) - np.asarray(gr))) <= 1e-5 * np.max(np.abs(np.asarray(gr)))
    with pytest.raises(ValueError, match="n_samples"):
        L.loss_against(pred[..., :1000], spectra)
    with pytest.raises(TypeError, match="precompute_target"):
        L.loss_against(pred, target)


def test_mrstft_loss_under_vmap_and_with_an_unused_output():
    pred, target = jnp.asarray(_audio((2, 3, 2048), 4)), jnp.asarray(_audio((2, 3, 2048), 5))
    v = jax.jit(jax.vmap(lambda p, t: L.multi_resolution_stft_loss(p, t, fft_sizes=SIZES)))(pred, target)
    np.testing.assert_allclose(np.asarray(v), np.asarray(_mrstft_reference(pred, target, SIZES)), rtol=1e-6)
    g = jax.grad(lambda p: jnp.sum(p) + 0.0 * jnp.sum(L.multi_resolution_stft_loss(p, target, fft_sizes=SIZES)))(pred)
    np.testing.assert_allclose(np.asarray(g), 1.0)


# ---------------------------------------------------------------------------------------
# Limiter: custom VJP
# ---------------------------------------------------------------------------------------


def test_limiter_backward_equals_autodiff_of_its_recursion():
    """The hand-written reverse scan against autodiff of the double-float follower (forward
    bit-exact: the custom VJP changes only the backward pass)."""
    n, sr = 3000, 16000
    rng = np.random.default_rng(3)
    t = np.arange(n) / sr
    env = np.where(t < 0.03, 1.5, 1.5 * np.exp(-(t - 0.03) * 30))
    x = jnp.asarray(np.abs(env * np.sin(2 * np.pi * rng.uniform(100, 900, (2, 1)) * t))
                    + 0.05 * np.abs(rng.standard_normal((2, n))), jnp.float32)
    args = (x,) + tuple(jnp.asarray(v, jnp.float32) for v in (
        [0.99997, 0.99999], [1e-9, -2e-9], [0.6, 0.3], [3e-8, 0.0], [0.9, 0.8], [0.0, 0.4]))
    w = jnp.asarray(rng.standard_normal((2, n)), jnp.float32)

    def autodiff(*a):
        g = fx._limiter_scan(jnp.moveaxis(a[0], -1, 0), *a[1:])
        return jnp.sum(jnp.moveaxis(g, 0, -1) * w)

    def custom(*a):
        return jnp.sum(fx._limiter_gain(*a) * w)

    v1, g1 = jax.jit(jax.value_and_grad(custom, argnums=tuple(range(7))))(*args)
    v2, g2 = jax.jit(jax.value_and_grad(autodiff, argnums=tuple(range(7))))(*args)
    assert float(v1) == float(v2)
    assert float(jnp.min(jnp.asarray(fx._limiter_gain(*args)))) < 0.7  # the limiter is engaged
    names = ("x", "keep_hi", "keep_lo", "att_hi", "att_lo", "threshold", "initial_peak")
    for name, a, b in zip(names, g1, g2):
        a, b = np.asarray(a), np.asarray(b)
        if name.endswith("_lo"):  # autodiff: the error terms carry no derivative; the custom VJP the hi one's
            continue
        assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b)) + 1e-12, name


def test_peak_limiter_gradient_matches_finite_differences():
    n, sr = 2000, 16000
    t = np.arange(n) / sr
    sig = jnp.asarray(1.4 * np.sin(2 * np.pi * 220 * t) * np.exp(-t * 8), jnp.float32)
    w = jnp.asarray(np.random.default_rng(5).standard_normal((2, n)), jnp.float32)

    def f(p):
        left, right = fx.peak_limiter(p[0] * sig, 0.5 * sig, sr, threshold=p[1], attack_s=p[2] * 1e-3,
                                      release_s=p[3])
        return jnp.sum(jnp.stack([left, right]) * w) / n

    p0 = np.array([1.0, 0.9, 0.5, 0.2])
    g = np.asarray(jax.jit(jax.grad(f))(jnp.asarray(p0, jnp.float32)), np.float64)
    fj = jax.jit(f)
    for i, h in enumerate((1e-3, 1e-3, 1e-2, 1e-3)):
        pp, pm = p0.copy(), p0.copy()
        pp[i] += h
        pm[i] -= h
        fd = (float(fj(jnp.asarray(pp, jnp.float32))) - float(fj(jnp.asarray(pm, jnp.float32)))) / (2 * h)
        assert abs(g[i] - fd) <= 3e-2 * abs(fd) + 1e-5, (i, g[i], fd)
