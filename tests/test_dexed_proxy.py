"""The Dexed JAX proxy (proxies/dexed/proxy.py) against dexed-py 0.3.0, stage by stage.

Exact mode must be **bit-identical** to dexed-py: every stage voice (a carrier sine, modulator
pairs over the ratio ranges and fixed mode, feedback incl. the loops of DX7 algorithms 4 and 6,
envelope stages with static holds, the six LFO waves with delay / sync / PMD / AMD, the pitch
EG, keyboard level / rate scaling, velocity) plus ROM and random voices renders with one
compiled function at 16 kHz (which also exercises the Freqlut overflow below 16384 Hz), and a
few at 44.1 kHz. Relaxed mode: on the integer grid its engine forward equals exact mode; its
smooth surrogate's gradients match finite differences; the algorithm mixture, the frequency
gradients and the calibration round trips are checked.

Compilations are shared per module (one config and batch size per mode); the whole file takes
well under a minute on 2 cores.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy
dexed = pytest.importorskip("dexed")

from proxies.dexed import calibration as cal  # noqa: E402
from proxies.dexed import proxy as px  # noqa: E402
from proxies.synth import NoteConvention, ProxyRender, note_off_sample  # noqa: E402

ROM = "/usr/share/hexter/dx7_roms.dx7"
STAGE = ProxyRender(sample_rate=16000, duration_s=0.6, hold_s=0.35)
ROWS = 48  # the stage batch (padded with silence)
FIELDS = {"R1": 0, "R2": 1, "R3": 2, "R4": 3, "L1": 4, "L2": 5, "L3": 6, "L4": 7, "BP": 8, "LD": 9, "RD": 10,
          "LC": 11, "RC": 12, "RS": 13, "AMS": 14, "KVS": 15, "OL": 16, "MODE": 17, "C": 18, "F": 19, "D": 20}
GLOBAL = {"PR": 126, "PL": 130, "ALG": 134, "FB": 135, "SPEED": 137, "DELAY": 138, "PMD": 139, "AMD": 140,
          "SYNC": 141, "WAVE": 142, "PMS": 143, "TRANSPOSE": 144}


# ---------------------------------------------------------------------------------- helpers
def voice(ops=None, **glob) -> np.ndarray:
    """A VCED voice: every operator silent (OL 0) with fast full envelopes, ratio 1, detune 0,
    except ``ops = {DX7 op number: {field: value}}``; globals by the names of GLOBAL (``PR`` /
    ``PL`` take 4-tuples). Default algorithm 32 (all carriers), no LFO, flat pitch EG."""
    v = np.zeros(155, np.int32)
    for k in range(6):
        b = 21 * k
        v[b:b + 4] = 99
        v[b + 4:b + 8] = (99, 99, 99, 0)
        v[b + 8] = 39
        v[b + 18] = 1
        v[b + 20] = 7
    v[126:130] = 99
    v[130:134] = 50
    v[134] = 31
    v[137] = 35
    v[144] = 24
    for op, fields in (ops or {}).items():
        for f, x in fields.items():
            v[21 * (6 - op) + FIELDS[f]] = x
    for name, x in glob.items():
        i = GLOBAL[name]
        if name in ("PR", "PL"):
            v[i:i + 4] = x
        else:
            v[i] = x
    return v


def rom_voices() -> np.ndarray:
    """The 128 DX7 ROM voices as VCED ``[128, 155]`` (dexed-py's own VMEM unpacker)."""
    data = open(ROM, "rb").read()
    return np.stack([np.asarray(dexed.Patch.from_packed(data[128 * i:128 * (i + 1)]).to_raw(), np.int32)[:155]
                     for i in range(128)])


def random_voices(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform random voices in the native ranges (output levels 40..99, 20 % fixed operators)."""
    v = np.stack([rng.integers(0, hi + 1, n) for hi in px.VCED_MAX], 1).astype(np.int32)
    for k in range(6):
        v[:, 21 * k + 16] = rng.integers(40, 100, n)
        v[:, 21 * k + 17] = rng.random(n) < 0.2
    return v


def dexed_render(v, note, velocity, config: ProxyRender, raw_hold: bool = False) -> np.ndarray:
    """dexed-py's render of one voice, released as proxies.dexed.engine releases it (at
    ``note_off_sample(hold_s, sr, (64, ceil))``), or with ``raw_hold`` at dexed-py's own
    rounding of ``note_duration = hold_s``."""
    synth = dexed._dexed.DexedSynth(float(config.sample_rate), 0)
    synth.load_sysex(bytes(np.asarray(v, np.uint8).tobytes()) + bytes([0x3F]))
    off = note_off_sample(config.hold_s, config.sample_rate, px.NOTES)
    hold = config.hold_s if raw_hold else ((off - 16) / config.sample_rate if off > 0 else 0.0)
    y = synth.render(int(note), int(velocity), hold, (config.n_samples + 32) / config.sample_rate)
    return np.asarray(y[:config.n_samples], np.float32)


def snr_db(ref, est) -> float:
    err = np.sum((np.asarray(ref, np.float64) - est) ** 2)
    return float(10 * np.log10(np.sum(np.asarray(ref, np.float64) ** 2) / max(err, 1e-30)))


# ------------------------------------------------------------------------------ stage voices
def stage_cases() -> dict[str, tuple[np.ndarray, int, int]]:
    """name -> (voice, note, velocity): each isolates one stage of the engine."""
    c: dict[str, tuple[np.ndarray, int, int]] = {}
    c["carrier sine"] = (voice({1: {"OL": 99}}), 69, 100)
    c["carrier OL 60, velocity sens"] = (voice({1: {"OL": 60, "KVS": 7}}), 60, 30)
    pair = lambda mod, alg=0, **g: voice({1: {"OL": 99}, 2: dict(OL=80, **mod)}, ALG=alg, **g)  # noqa: E731
    c["pair ratio 0.5"] = (pair({"C": 0}), 57, 100)
    c["pair ratio 1.50"] = (pair({"C": 1, "F": 50}), 45, 100)
    c["pair ratio 7, detune +7"] = (pair({"C": 7, "D": 14}), 60, 100)
    c["pair ratio 31.99"] = (pair({"C": 31, "F": 99, "D": 0}), 30, 100)
    c["pair fixed 316 Hz, detune +3"] = (pair({"MODE": 1, "C": 2, "F": 50, "D": 10}), 60, 100)
    c["pair fixed 31.6 Hz carrier"] = (voice({1: {"OL": 99, "MODE": 1, "C": 1, "F": 50}}), 60, 100)
    c["feedback 7, alg 1"] = (voice({1: {"OL": 99}, 2: {"OL": 70}, 6: {"OL": 90}, 5: {"OL": 80}, 3: {"OL": 90},
                                     4: {"OL": 75}}, ALG=0, FB=7), 48, 100)
    c["feedback 5 alone, alg 32"] = (voice({6: {"OL": 99}}, ALG=31, FB=5), 60, 100)
    c["alg 4 loop, fb 6"] = (voice({1: {"OL": 99}, 2: {"OL": 70}, 3: {"OL": 80}, 4: {"OL": 90, "R1": 60},
                                    5: {"OL": 80}, 6: {"OL": 85}}, ALG=3, FB=6), 52, 90)
    c["alg 6 loop, fb 4"] = (voice({1: {"OL": 99}, 2: {"OL": 70}, 5: {"OL": 90}, 6: {"OL": 80, "R1": 40}},
                                   ALG=5, FB=4), 64, 90)
    c["alg 16, three modulators"] = (voice({1: {"OL": 99}, 2: {"OL": 60, "C": 2}, 3: {"OL": 70, "C": 3},
                                            4: {"OL": 65, "C": 5}, 5: {"OL": 70, "C": 4}, 6: {"OL": 60}},
                                           ALG=15, FB=3), 55, 100)
    env = {"OL": 99, "R1": 55, "R2": 60, "R3": 45, "R4": 70, "L1": 99, "L2": 80, "L3": 70, "L4": 0}
    c["envelope 4 stages"] = (voice({1: env}), 60, 100)
    c["envelope release to L4 40"] = (voice({1: dict(env, L4=40, R4=30)}), 60, 100)
    c["envelope static hold L1 = L2 (98, 99)"] = (voice({1: dict(env, L1=98, L2=99, R2=72)}), 60, 100)
    c["envelope attack hold L1 = 0"] = (voice({1: dict(env, L1=0, R1=85, R2=70, L2=99)}), 60, 100)
    c["envelope slow attack, rate scaling 7"] = (voice({1: dict(env, R1=30, RS=7)}), 96, 100)
    for w in range(6):
        c[f"LFO wave {w} PMD/AMD"] = (voice({1: {"OL": 99, "AMS": 3}, 2: {"OL": 70, "AMS": 2}}, ALG=0, SPEED=70,
                                            PMD=99, AMD=60, PMS=5, WAVE=w), 60, 100)
    c["LFO delay 40, sync, sine"] = (voice({1: {"OL": 99, "AMS": 1}}, SPEED=80, DELAY=40, PMD=70, AMD=99, PMS=7,
                                           WAVE=4, SYNC=1), 60, 100)
    c["AMS 1, AMD 0 (-1.07 dB)"] = (voice({1: {"OL": 99, "AMS": 1}}), 60, 100)
    c["pitch EG"] = (voice({1: {"OL": 99}}, PR=(70, 60, 50, 40), PL=(99, 0, 60, 50)), 60, 100)
    c["pitch EG release, fixed op unaffected"] = (voice({1: {"OL": 99}, 3: {"OL": 90, "MODE": 1, "C": 2}},
                                                        PR=(99, 99, 99, 30), PL=(50, 50, 50, 0)), 72, 100)
    for curve in range(4):
        kls = {"OL": 90, "BP": 39, "LD": 99, "RD": 80, "LC": curve, "RC": 3 - curve}
        c[f"KLS curve {curve} left"] = (voice({1: kls}), 36, 100)
        c[f"KLS curve {3 - curve} right"] = (voice({1: kls}), 84, 100)
    c["transpose +12, KLS"] = (voice({1: {"OL": 90, "BP": 50, "RD": 99, "RC": 1}}, TRANSPOSE=36), 60, 100)
    return c


@pytest.fixture(scope="module")
def exact16():
    """One compiled exact-mode render for the stage batch (and a trace counter)."""
    traces = []

    def f(v, pitch, velocity):
        traces.append(1)
        return px.render(px.DexedControls(v), pitch, velocity, STAGE)

    jitted = jax.jit(f)

    def run(voices, notes, vels):
        n = len(voices)
        pad = ROWS - n
        v = np.concatenate([np.asarray(voices, np.float32), np.repeat(voice()[None], pad, 0)])
        p = np.concatenate([notes, np.full(pad, 60)]).astype(np.int32)
        ve = np.concatenate([vels, np.full(pad, 100)]).astype(np.int32)
        return np.asarray(jitted(jnp.asarray(v), jnp.asarray(p), jnp.asarray(ve)))[:n, 0]

    run.traces = traces
    return run


@pytest.fixture(scope="module")
def stage_renders(exact16):
    cases = stage_cases()
    rng = np.random.default_rng(7)
    rom = rom_voices()
    for i in (0, 10, 21, 60, 97):
        cases[f"ROM {i}"] = (rom[i], int(rng.integers(30, 90)), int(rng.integers(20, 128)))
    for i, v in enumerate(random_voices(rng, 6)):
        cases[f"random {i}"] = (v, int(rng.integers(24, 100)), int(rng.integers(1, 128)))
    assert len(cases) <= ROWS
    names = list(cases)
    vs = np.stack([cases[k][0] for k in names])
    notes = np.array([cases[k][1] for k in names])
    vels = np.array([cases[k][2] for k in names])
    ours = exact16(vs, notes, vels)
    ref = np.stack([dexed_render(vs[i], notes[i], vels[i], STAGE) for i in range(len(names))])
    return names, ours, ref


# ----------------------------------------------------------------------------- exact mode
def test_every_stage_is_bit_identical_to_dexed_py(stage_renders):
    names, ours, ref = stage_renders
    bad = [f"{n}: SNR {snr_db(r, o):.1f} dB, max |diff| {np.max(np.abs(r - o)):.3g}"
           for n, o, r in zip(names, ours, ref) if not np.array_equal(o, r)]
    assert not bad, "\n".join(bad)
    silent = [n for n, r in zip(names, ref) if np.max(np.abs(r)) < 1e-3]
    assert not silent, f"stage voices that test nothing (silent): {silent}"


def test_one_compilation_serves_every_note(exact16):
    v = np.stack([voice({1: {"OL": 99}, 2: {"OL": 70, "C": 3}}, ALG=0)] * 2)
    before = len(exact16.traces)
    a = exact16(v, np.array([40, 80]), np.array([100, 100]))
    b = exact16(v, np.array([80, 40]), np.array([100, 100]))
    assert len(exact16.traces) - before <= 1 and len(exact16.traces) == 1  # traced once for the module
    np.testing.assert_array_equal(a[0], b[1])
    np.testing.assert_array_equal(a[0], dexed_render(v[0], 40, 100, STAGE))
    np.testing.assert_array_equal(a[1], dexed_render(v[1], 80, 100, STAGE))


def test_note_off_is_quantised_up_to_a_64_sample_block():
    conv = NoteConvention(note_off_quantum=64, note_off_rounding="ceil")
    assert px.NOTES == conv
    # dexed-py's own rounding of note_duration agrees with note_off_sample for a generic hold
    cfg = ProxyRender(16000, 0.3, 0.2133)  # 3412.8 samples -> block 54 -> sample 3456
    assert note_off_sample(cfg.hold_s, cfg.sample_rate, conv) == 3456
    v = voice({1: {"OL": 99, "R4": 80}})
    np.testing.assert_array_equal(dexed_render(v, 60, 100, cfg, raw_hold=True), dexed_render(v, 60, 100, cfg))
    y = dexed_render(v, 60, 100, cfg)
    env = np.abs(y).reshape(-1, 64).max(1)
    assert env[53] > 0.99 and env[54] < env[53]  # the release starts in block 54 exactly


def test_rom_and_random_voices_at_44k():
    cfg = ProxyRender(44100, 0.25, 0.15)
    rng = np.random.default_rng(3)
    vs = np.concatenate([rom_voices()[[3, 33, 70]], random_voices(rng, 3)])
    notes, vels = rng.integers(30, 90, len(vs)), rng.integers(30, 128, len(vs))
    y = np.asarray(jax.jit(lambda v, p, ve: px.render_exact(v, p, ve, cfg))(
        jnp.asarray(vs), jnp.asarray(notes, jnp.int32), jnp.asarray(vels, jnp.int32)))[:, 0]
    assert y.shape == (len(vs), cfg.n_samples) and y.dtype == np.float32
    for i in range(len(vs)):
        np.testing.assert_array_equal(y[i], dexed_render(vs[i], notes[i], vels[i], cfg))


def test_routing_tables_match_dexed_metadata():
    for a in range(32):
        mod, car = px.alg_routing(a)
        meta = dexed.algorithms[a]
        np.testing.assert_array_equal(mod, np.asarray(meta.mod_matrix, np.int32), err_msg=f"algorithm {a + 1}")
        assert sorted(np.flatnonzero(car)) == sorted(meta.carriers), f"algorithm {a + 1}"  # 0 = OP1
    assert list(px.FB_TARGET[[3, 5]]) == [0, 0] and list(px.FB_SOURCE[[3, 5]]) == [2, 1]


def test_am_exp_table_is_exact():
    s = np.concatenate([np.arange(0, 4096), np.random.default_rng(0).integers(0, 1 << 24, 20000), [1 << 24]])
    ours = np.asarray(px._am_pt(jnp.asarray(s, jnp.uint32)))
    import math
    ref = np.array([int(math.exp(float(np.float32(x)) / 262144 * 0.07 + 12.2)) for x in s])
    np.testing.assert_array_equal(ours, ref)


# --------------------------------------------------------------------------- relaxed mode
GRAD = ProxyRender(sample_rate=16000, duration_s=0.3, hold_s=0.2)
GB = 4


@pytest.fixture(scope="module")
def relaxed_fns():
    """Three compiled functions shared by the relaxed-mode tests (batch GB, config GRAD):
    the engine forward, the smooth surrogate's per-voice spectral loss with its gradients
    (with respect to values and probabilities), and exact mode."""
    from diffsynth.losses import multi_resolution_stft_loss

    p = jnp.full((GB,), 60, jnp.int32)
    ve = jnp.full((GB,), 100, jnp.int32)
    engine = jax.jit(lambda x, probs: px.render_relaxed(x, probs, p, ve, GRAD))

    def losses(x, probs, target, w):
        """w[0] * mean squared error (smooth, for finite differences) + w[1] * the spectral loss."""
        y = px.render_relaxed(x, probs, p, ve, GRAD, forward="smooth")
        per = w[0] * jnp.mean((y - target) ** 2, axis=(1, 2)) + w[1] * multi_resolution_stft_loss(y, target)[:, 0]
        return per, y

    def total(x, probs, target, w):
        per, y = losses(x, probs, target, w)
        return jnp.sum(per), (per, y)

    smooth = jax.jit(jax.value_and_grad(total, argnums=(0, 1), has_aux=True))
    exact = jax.jit(lambda v: px.render_exact(v, p, ve, GRAD))
    return engine, smooth, exact


def test_relaxed_engine_forward_equals_exact_on_the_grid(relaxed_fns):
    engine, _, exact = relaxed_fns
    v = np.stack([rom_voices()[i] for i in (1, 30, 44)] + [voice({1: {"OL": 99}, 2: {"OL": 80}}, ALG=3, FB=7)])
    x = jnp.asarray(v, jnp.float32)
    np.testing.assert_array_equal(np.asarray(engine(x, px.hard_probs(x))), np.asarray(exact(jnp.asarray(v))))
    # off the grid the output moves continuously: OP1's output level 99 -> 98.7
    a, b = np.asarray(engine(x, px.hard_probs(x))), np.asarray(engine(x.at[:, 21 * 5 + 16].add(-0.3), px.hard_probs(x)))
    for i in range(GB):
        assert not np.array_equal(a[i], b[i]) and snr_db(a[i], b[i]) > 20


def _smooth_target(smooth, v):
    """The smooth surrogate's own render of voices ``v`` (its loss is 0 there)."""
    x = jnp.asarray(v, jnp.float32)
    return smooth(x, px.hard_probs(x), jnp.zeros((GB, 1, GRAD.n_samples), jnp.float32), MSS)[0][1][1]


MSE, MSS = jnp.asarray([1.0, 0.0]), jnp.asarray([0.0, 1.0])


def test_smooth_surrogate_gradients_match_finite_differences(relaxed_fns):
    """Autodiff of the smooth surrogate (mean squared error to its own render of a nearby voice)
    against central differences; the step stays inside the rounding cell and away from the
    surrogate's discrete events (stage changes)."""
    _, smooth, _ = relaxed_fns
    v = np.stack([voice({1: {"OL": 90, "R2": 50, "L2": 90, "L3": 80, "AMS": 2}, 2: {"OL": 70, "C": 2, "D": 5}},
                        ALG=1, FB=4, SPEED=60, AMD=40, PL=(60, 50, 50, 50), PR=(80, 99, 99, 99))] * GB)
    target = _smooth_target(smooth, v)
    x = np.array(v, np.float32)
    checks = {"OP1 OL": 21 * 5 + 16, "OP1 R2": 21 * 5 + 1, "OP2 OL": 21 * 4 + 16, "feedback": 135,
              "pitch EG L1": 130, "OP2 detune": 21 * 4 + 20}
    for j, i in enumerate(checks.values()):  # move each voice off the target in one parameter
        x[j % GB, i] += 1.0 if j < GB else -1.0
    x = jnp.asarray(x)
    probs = px.hard_probs(jnp.floor(x + 0.5))
    (_, _), (g, _) = smooth(x, probs, target, MSE)
    g = np.asarray(g)
    eps = 0.005
    for j, (name, i) in enumerate(checks.items()):
        e = np.zeros(x.shape, np.float32)
        e[j % GB, i] = eps
        fd = (float(smooth(x + e, probs, target, MSE)[0][1][0][j % GB]) -
              float(smooth(x - e, probs, target, MSE)[0][1][0][j % GB])) / (2 * eps)
        gi = g[j % GB, i]
        assert abs(fd) > 1e-6, f"{name}: finite difference {fd:.3g} too small to test"
        assert abs(gi - fd) <= 0.05 * abs(fd), f"{name}: autodiff {gi:.5g}, finite difference {fd:.5g}"


def test_algorithm_mixture_and_probability_gradients(relaxed_fns):
    engine, smooth, exact = relaxed_fns
    v = np.stack([voice({1: {"OL": 99}, 2: {"OL": 80, "C": 2}, 3: {"OL": 99}, 4: {"OL": 75, "C": 3}}, ALG=a, FB=5)
                  for a in (0, 1, 4, 31)])
    x = jnp.asarray(v, jnp.float32)
    probs = px.hard_probs(x)
    mixed = dict(probs, alg=0.5 * probs["alg"] + 0.5 * jnp.roll(probs["alg"], 1, axis=0))
    y_hard, y_mix = np.asarray(engine(x, probs)), np.asarray(engine(x, mixed))
    np.testing.assert_array_equal(y_hard, np.asarray(exact(jnp.asarray(v))))
    assert all(not np.array_equal(a, b) for a, b in zip(y_hard, y_mix))
    (_, _), (_, gp) = smooth(x, mixed, jnp.asarray(y_hard), MSS)
    ga = np.asarray(gp["alg"])
    assert np.all(np.isfinite(ga)) and np.all(np.abs(ga).sum(1) > 0)


def test_frequency_gradients_are_local(relaxed_fns):
    """d loss / d fine points toward the target ratio only close to it (the documented choice:
    ratios are set by the parameter loss or a search, not by the spectral gradient)."""
    _, smooth, _ = relaxed_fns
    target_voice = voice({1: {"OL": 99}, 2: {"OL": 75, "C": 2, "F": 30}}, ALG=0)
    target = _smooth_target(smooth, np.stack([target_voice] * GB))
    fine = np.array([29.0, 29.5, 30.5, 31.0])
    x = np.stack([target_voice] * GB).astype(np.float32)
    x[:, 21 * 4 + 19] = fine
    (_, (loss, _)), (g, _) = smooth(jnp.asarray(x), px.hard_probs(jnp.asarray(x)), target, MSS)
    g = np.asarray(g)[:, 21 * 4 + 19]
    assert np.all(np.asarray(loss) > 0.1)
    assert np.all(np.sign(-g) == np.sign(30.0 - fine)), g


# ----------------------------------------------------------------------------- calibration
def test_calibration_round_trips_and_modes():
    rng = np.random.default_rng(5)
    v = random_voices(rng, 3)
    lo, hi = px.VCED_MIN, px.VCED_MAX
    n = (v - lo) / (hi - lo)
    c = cal.to_controls(n)
    assert c.probs is None
    np.testing.assert_array_equal(np.asarray(c.values), v)
    np.testing.assert_allclose(np.asarray(cal.from_controls(c)), n, atol=1e-6)
    oh = cal.one_hot(n)
    assert set(oh) == set(cal.RELAXED) and oh["algorithm"].shape == (3, 32)
    r = cal.to_controls(n, {})
    np.testing.assert_array_equal(np.asarray(r.values), v)  # on-grid values snap exactly
    np.testing.assert_array_equal(np.asarray(r.probs["alg"]), np.asarray(oh["algorithm"]))
    r2 = cal.to_controls(n, {"op1_kls_left_curve": jnp.full((3, 4), 0.25)})
    np.testing.assert_allclose(np.asarray(r2.probs["lc"][:, 5]), 0.25)
    with pytest.raises(ValueError, match="osc_mode"):
        cal.to_controls(n, {"op1_osc_mode": jnp.ones((3, 2))})
    with pytest.raises(ValueError, match="155"):
        cal.to_controls(n[:, :100])
    proxy = cal.load_proxy()
    assert proxy.relaxed == cal.RELAXED and proxy.render is px.render


def test_spec_agrees_with_the_proxy_table():
    spec = pytest.importorskip("proxies.dexed.spec")
    assert tuple(spec.DEXED.names) == px.VCED_NAMES
    np.testing.assert_array_equal(spec.DEXED.minimum, px.VCED_MIN)
    np.testing.assert_array_equal(spec.DEXED.maximum, px.VCED_MAX)
