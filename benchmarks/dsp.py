"""JAX DSP throughput: a reference voice (ours) vs SynthAX's ``Voice``, and the filters alone.

    python benchmarks/dsp.py [--quick] [--json OUT.json]

Reference voice (``diffsynth``): 2 oscillators (saw/triangle, detuned) -> mix -> 24 dB
time-varying low-pass (cutoff per 64-sample block from a filter ADSR read at each block's
last sample, amsynth-style) -> linear ADSR VCA; one note of 1.5 s, note-off at 1.0 s. Run
with both filter implementations (``scan`` and ``blocks``).

SynthAX ``Voice`` (PyPI ``synthax``, optional extra ``bench``): its stock 2-VCO + noise
voice with ADSRs, LFOs and a modulation matrix (no filter), randomly initialised
parameters, same batch, length and sample rate.

Measured per configuration (batch 1/16/64/256 -- quick: 1/64 -- at 16 kHz and 44.1 kHz):

* forward: ``jit(render)(params)``;
* forward + gradient: ``jit(grad(loss))(params)`` with ``loss`` = batch mean of
  :func:`diffsynth.losses.multi_resolution_stft_loss` (FFT 64..2048) against a fixed
  target rendered from other parameters -- the same loss for both synths;
* "x real time" = seconds of audio produced per wall second, summed over the batch;
  median of the timed repeats after one warm-up call (compile time reported apart);
* CPU seconds per call (all threads of this process), steadier than wall time on a
  shared machine;
* non-finite gradient entries (summed over every parameter array).

Also the filters alone (LP24 on noise, per-block cutoff), forward and gradient, and the
float32 precision of both filters against amsynth's float64 arithmetic (LP24, Q 16.7,
44.1 kHz, 1.5 s white noise).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from diffsynth import envelopes, filters, losses, oscillators  # noqa: E402
from diffsynth.control import block_values_at, n_blocks  # noqa: E402

DURATION_S = 1.5
NOTE_OFF_S = 1.0
BLOCK = 64
R_MAX_Q = 2.0 * (1.0 - 0.97)


# ---------------------------------------------------------------------------------------
# Reference voice (ours)
# ---------------------------------------------------------------------------------------


def voice_params(key: jax.Array, batch: int) -> dict[str, jax.Array]:
    """Random physical parameters, each of shape [batch]."""
    ks = jax.random.split(key, 12)
    u = lambda k, lo, hi: jax.random.uniform(k, (batch,), jnp.float32, lo, hi)  # noqa: E731
    return {
        "f0_hz": u(ks[0], 55.0, 440.0),
        "detune": u(ks[1], 0.99, 1.01),
        "shape": u(ks[2], 0.5, 0.95),
        "mix": u(ks[3], 0.2, 0.8),
        "cutoff_hz": u(ks[4], 100.0, 2000.0),
        "env_amount": u(ks[5], 0.0, 8.0),
        "resonance_r": u(ks[6], 0.2, 2.0),
        "f_attack_s": u(ks[7], 0.005, 0.3),
        "f_decay_s": u(ks[8], 0.05, 0.5),
        "f_sustain": u(ks[9], 0.0, 1.0),
        "a_attack_s": u(ks[10], 0.002, 0.1),
        "a_release_s": u(ks[11], 0.05, 0.4),
    }


def make_voice(sample_rate: float, method: str):
    n = int(round(DURATION_S * sample_rate))
    note_off = NOTE_OFF_S * sample_rate

    def render(p: dict[str, jax.Array]) -> jax.Array:
        f0 = p["f0_hz"][:, None]
        # block-rate pitch (amsynth sets oscillator frequencies once per 64-sample block)
        ones = jnp.ones((1, n_blocks(n, BLOCK)), jnp.float32)
        ph1 = oscillators.phase_from_block_frequency(f0 * ones, BLOCK, n, sample_rate)
        ph2 = oscillators.phase_from_block_frequency(f0 * p["detune"][:, None] * ones, BLOCK, n,
                                                     sample_rate)
        shape = p["shape"][:, None]
        mix = p["mix"][:, None]
        x = (1.0 - mix) * oscillators.saw_triangle(ph1, shape) + mix * oscillators.saw_triangle(
            ph2, shape)
        fenv = envelopes.adsr(p["f_attack_s"], p["f_decay_s"], p["f_sustain"], 0.2, n,
                              sample_rate, note_off=note_off)
        fenv_blocks = block_values_at(fenv, BLOCK, "last")  # [B, n_blocks]
        cutoff = p["cutoff_hz"][:, None] + p["env_amount"][:, None] * f0 * fenv_blocks
        cutoff = jnp.clip(cutoff, 10.0, 0.99 * sample_rate / 2)
        c = filters.biquad_coefficients("lowpass", cutoff, p["resonance_r"][:, None], sample_rate)
        y = filters.biquad_cascade(x, c, 2, block_size=BLOCK, method=method)
        aenv = envelopes.adsr(p["a_attack_s"], 0.2, 0.7, p["a_release_s"], n, sample_rate,
                              note_off=note_off)
        return 0.5 * y * aenv

    return render


# ---------------------------------------------------------------------------------------
# SynthAX Voice
# ---------------------------------------------------------------------------------------


def make_synthax(sample_rate: float, batch: int):
    from synthax.config import SynthConfig
    from synthax.synth import Voice

    cfg = SynthConfig(batch_size=batch, sample_rate=int(sample_rate),
                      buffer_size_seconds=DURATION_S)
    synth = Voice(config=cfg)
    params = synth.init(jax.random.PRNGKey(1))
    target_params = synth.init(jax.random.PRNGKey(2))
    return synth.apply, params, target_params


# ---------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------


def _time(fn, args, repeats: int) -> dict[str, float]:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    walls, cpus = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(fn(*args))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus),
            "first_call_s": compile_s}


def _nonfinite(tree) -> int:
    return int(sum(int(jnp.sum(~jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(tree)))


def bench_synth(render, params, target_params, batch: int, repeats: int) -> dict:
    audio_s = batch * DURATION_S
    target = jax.jit(render)(target_params)

    def loss(p, target):  # target is an argument: a closed-over array would be constant-folded
        return jnp.mean(losses.multi_resolution_stft_loss(render(p), target))

    fwd = jax.jit(render)
    grad = jax.jit(jax.grad(loss))
    tf = _time(fwd, (params,), repeats)
    tg = _time(grad, (params, target), repeats)
    return {
        "fwd_xrt": audio_s / tf["wall_s"],
        "grad_xrt": audio_s / tg["wall_s"],
        "fwd_cpu_s": tf["cpu_s"],
        "grad_cpu_s": tg["cpu_s"],
        "fwd_compile_s": tf["first_call_s"] - tf["wall_s"],
        "grad_compile_s": tg["first_call_s"] - tg["wall_s"],
        "nonfinite_grads": _nonfinite(grad(params, target)),
        "n_grad_entries": int(sum(g.size for g in jax.tree_util.tree_leaves(params))),
    }


def bench_filter(method: str, batch: int, sample_rate: float, repeats: int) -> dict:
    n = int(round(DURATION_S * sample_rate))
    nb = -(-n // BLOCK)
    key = jax.random.PRNGKey(3)
    x = jax.random.uniform(key, (batch, n), jnp.float32, -1.0, 1.0)
    cut = jnp.geomspace(100.0, 8000.0, nb, dtype=jnp.float32) * jnp.ones((batch, 1))

    def run(cut, x):
        c = filters.biquad_coefficients("lowpass", cut, 0.5, sample_rate)
        return filters.biquad_cascade(x, c, 2, block_size=BLOCK, method=method)

    fwd = jax.jit(run)
    grad = jax.jit(jax.grad(lambda cut, x: jnp.mean(run(cut, x) ** 2)))
    tf = _time(fwd, (cut, x), repeats)
    tg = _time(grad, (cut, x), repeats)
    audio_s = batch * DURATION_S
    return {"fwd_xrt": audio_s / tf["wall_s"], "grad_xrt": audio_s / tg["wall_s"],
            "fwd_cpu_s": tf["cpu_s"], "grad_cpu_s": tg["cpu_s"]}


def filter_precision() -> dict:
    """SNR (dB) of the float32 filters vs float64 (amsynth's arithmetic), LP24, Q 16.7."""
    sr = 44100.0
    n = int(DURATION_S * sr)
    nb = -(-n // BLOCK)
    x = np.random.default_rng(0).uniform(-1, 1, n).astype(np.float32)
    out = {}
    for fc in (50.0, 5000.0):
        c32 = filters.biquad_coefficients("lowpass", np.full(nb, fc, np.float32), R_MAX_Q, sr)
        with jax.enable_x64(True):
            c64 = filters.biquad_coefficients("lowpass", np.full(nb, fc), R_MAX_Q, sr)
        ref = filters.biquad_reference(x, c64, BLOCK, 2)
        for method in ("scan", "blocks"):
            y = np.asarray(filters.biquad_cascade(x, c32, 2, method=method), np.float64)
            snr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - y) ** 2))
            out[f"{method}_lp24_{int(fc)}hz"] = round(float(snr), 1)
    return out


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="batch 1 and 64 only, fewer repeats")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--no-synthax", action="store_true", help="skip SynthAX")
    args = ap.parse_args(argv)

    batches = (1, 64) if args.quick else (1, 16, 64, 256)
    rates = (16000.0, 44100.0)
    repeats = 3 if args.quick else 5
    synthax_version = None
    if not args.no_synthax:
        try:
            from importlib.metadata import version

            import synthax  # noqa: F401

            synthax_version = version("synthax")
        except ImportError:
            print("synthax not installed (pip install -e '.[bench]'): skipping it")

    rows, filter_rows = [], []
    header = (f"{'impl':<14}{'sr':>7}{'batch':>6}{'fwd xRT':>10}{'grad xRT':>10}"
              f"{'fwd cpu s':>11}{'grad cpu s':>11}{'compile f/g s':>15}{'nonfinite':>10}")
    print(header)
    print("-" * len(header))
    for sr in rates:
        for batch in batches:
            impls = [("voice_scan", None), ("voice_blocks", None)]
            if synthax_version:
                impls.append(("synthax", None))
            for name, _ in impls:
                if name.startswith("voice"):
                    method = name.split("_")[1]
                    render = make_voice(sr, method)
                    params = voice_params(jax.random.PRNGKey(0), batch)
                    target_params = voice_params(jax.random.PRNGKey(1), batch)
                else:
                    render, params, target_params = make_synthax(sr, batch)
                res = bench_synth(render, params, target_params, batch, repeats)
                row = {"impl": name, "sample_rate": sr, "batch": batch, **res}
                rows.append(row)
                print(f"{name:<14}{sr:>7.0f}{batch:>6}{res['fwd_xrt']:>10.0f}"
                      f"{res['grad_xrt']:>10.0f}{res['fwd_cpu_s']:>11.3f}{res['grad_cpu_s']:>11.3f}"
                      f"{res['fwd_compile_s']:>7.1f}/{res['grad_compile_s']:<7.1f}"
                      f"{res['nonfinite_grads']:>10}", flush=True)
            for method in ("scan", "blocks"):
                res = bench_filter(method, batch, sr, repeats)
                filter_rows.append({"impl": f"filter_{method}", "sample_rate": sr, "batch": batch,
                                    **res})
                print(f"{'filter_' + method:<14}{sr:>7.0f}{batch:>6}{res['fwd_xrt']:>10.0f}"
                      f"{res['grad_xrt']:>10.0f}{res['fwd_cpu_s']:>11.3f}{res['grad_cpu_s']:>11.3f}",
                      flush=True)

    precision = filter_precision()
    print("float32 vs float64 SNR (dB), LP24 Q16.7 44.1 kHz 1.5 s noise:", precision)

    def pick(table, impl, key):
        for r in table:
            if r["impl"] == impl and r["batch"] == 64 and r["sample_rate"] == 44100.0:
                return r[key]
        return None

    default = filters.DEFAULT_METHOD.get(jax.default_backend(), "blocks")
    out = {
        "voice_fwd_xrt": pick(rows, f"voice_{default}", "fwd_xrt"),
        "voice_grad_xrt": pick(rows, f"voice_{default}", "grad_xrt"),
        "voice_nonfinite_grads": pick(rows, f"voice_{default}", "nonfinite_grads"),
        "synthax_fwd_xrt": pick(rows, "synthax", "fwd_xrt"),
        "synthax_grad_xrt": pick(rows, "synthax", "grad_xrt"),
        "synthax_nonfinite_grads": pick(rows, "synthax", "nonfinite_grads"),
        "scan_filter_fwd_xrt": pick(filter_rows, "filter_scan", "fwd_xrt"),
        "block_filter_fwd_xrt": pick(filter_rows, "filter_blocks", "fwd_xrt"),
        "scan_filter_grad_xrt": pick(filter_rows, "filter_scan", "grad_xrt"),
        "block_filter_grad_xrt": pick(filter_rows, "filter_blocks", "grad_xrt"),
        "voice_filter_method": default,
        "filter_precision_snr_db": precision,
        "table": rows,
        "filter_table": filter_rows,
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "synthax": synthax_version,
            "duration_s": DURATION_S,
            "repeats": repeats,
            "quick": args.quick,
            "loadavg_end": os.getloadavg(),
        },
    }
    if out["synthax_fwd_xrt"]:
        print(f"batch 64, 44.1 kHz: voice/synthax forward {out['voice_fwd_xrt'] / out['synthax_fwd_xrt']:.2f}x, "
              f"gradient {out['voice_grad_xrt'] / out['synthax_grad_xrt']:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (diffsynth.runtime: faster JAX, same output)
    main()
