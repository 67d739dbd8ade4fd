"""amsynth proxy vs real plugin throughput, both benchmark shapes measured side by side in one run.

    python benchmarks/proxy.py [--json OUT.json] [--runs 5] [--workers 2] [--shapes train,big] [--no-profile]

Shapes (random presets from the sampling prior, one note: 60, velocity 100):

* ``train``: batch 8, 16 kHz, 1 s, note held 0.6 s (the default training config's spectral step);
* ``big``: batch 64, 44.1 kHz, 1.5 s, note held 1.0 s.

Per shape:

* ``fwd``: ``jax.jit(calibration.render_normalized)`` (calibration + render, exact mode, float32),
  the rows split over the local devices (:func:`diffsynth.parallel.batch_parallel`; on CPU
  :mod:`diffsynth.runtime` makes one device per core, as the plugin's pool has one process per
  core); ``fwd_one_device``: the same on one device (with several devices only);
* ``grad`` (and ``grad_one_device``): value and gradient of the batch-mean multi-resolution STFT distance
  (``diffsynth.losses.multi_resolution_stft_loss``) of the rendered batch to a target batch, w.r.t.
  the normalized inputs (what a spectral training step costs), at ``--fft-sizes`` (default: the
  default config's ``loss.fft_sizes``, the training loss); ``grad_eval_sizes``: the same at the
  evaluation's FFT sizes (64..2048), timed too when the two differ;
* ``plugin``: :class:`proxies.host.RenderPool` with ``--workers`` processes and the host's
  determinism protocol (what the data pipeline uses), pool start-up excluded;
* ``grad_pretarget`` (``--precomputed-target``): ``grad`` with the target's spectra computed once
  (``diffsynth.losses.precompute_target`` / ``loss_against``), as a search or matching loop does.

The three are timed interleaved (fwd, grad, plugin, fwd, ...) ``--runs`` times after one untimed
(compiling / warming) call each; medians are reported, and the ratios ``<shape>_fwd_vs_plugin``
/ ``<shape>_grad_vs_plugin`` are throughput ratios (> 1: the proxy is faster than the plugin).
Then a per-stage profile (``--no-profile`` skips it): forward and forward + backward (VJP) of
the voice (calibration, oscillators, filter, VCA, noise replay), distortion, reverb, limiter and
the loss, each jitted alone on the shape's real intermediate signals.

The run applies :mod:`diffsynth.runtime`'s process settings (the script re-executes itself once
with ``GLIBC_TUNABLES``; ``DIFFSYNTH_RUNTIME=0`` measures without them); the JSON records what
was in effect. The machine is shared: compare the rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {
    "train": dict(batch=8, sample_rate=16000, duration_s=1.0, hold_s=0.6),
    "big": dict(batch=64, sample_rate=44100, duration_s=1.5, hold_s=1.0),
}


def _fft_sizes(text: str | None) -> tuple[int, ...]:
    """``--fft-sizes``: comma-separated powers of two, or None for the default config's training loss."""
    if text is None:
        from training.config import load_config  # noqa: PLC0415

        return tuple(load_config(Path(__file__).resolve().parents[1] / "configs" / "amsynth.toml").loss.fft_sizes)
    sizes = tuple(int(x) for x in text.split(",") if x.strip())
    if not sizes or any(n < 16 or n & (n - 1) for n in sizes):
        raise ValueError(f"expected powers of two >= 16, e.g. 128,512,2048; got {text!r}")
    return sizes


def _first(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _interleaved(fns: dict, runs: int) -> dict[str, list[float]]:
    """Times every function ``runs`` times, round robin (shared load hits all alike)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def _median_ms(fn, runs: int) -> float:
    fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def _profile(n, target, config, runs: int, fft_sizes: tuple[int, ...]) -> dict:
    """Forward and forward + backward time (ms) of each stage of the render and the loss."""
    import jax
    import jax.numpy as jnp

    from diffsynth import effects as dsfx
    from diffsynth.losses import multi_resolution_stft_loss
    from proxies.amsynth import calibration as cal
    from proxies.amsynth import proxy as px

    sr = config.sample_rate
    n_samples = config.n_samples

    def voice(x):
        return px.render_mono_voice(cal.to_proxy(x), config)

    params = jax.jit(cal.to_proxy)(n)
    mono = jax.jit(voice)(n)
    room, damp, wet, width = params.reverb_room, params.reverb_damp, params.reverb_wet, params.reverb_width
    expo = params.distortion_exponent

    def distortion(m, c):
        return dsfx.power_distortion(m, c[:, None])

    def reverb(y, r, d, w, wd):  # as proxies.amsynth.proxy.master_section calls it
        return jnp.stack(dsfx.freeverb(y, y, sr, r, d, w, 1.0 - w, wd, room_scale=1.0, room_offset=0.0,
                                       damp_scale=1.0, max_damp=0.4), 1)

    def limiter(s):
        return jnp.stack(dsfx.peak_limiter(s[:, 0], s[:, 1], sr), 1)

    def loss(a):
        return jnp.mean(multi_resolution_stft_loss(a[:, :, :n_samples], target, fft_sizes=fft_sizes))

    dist_out = jax.jit(distortion)(mono, expo)
    rev_out = jax.jit(reverb)(dist_out, room, damp, wet, width)
    lim_out = jax.jit(limiter)(rev_out)
    stages = [("voice", voice, (n,)), ("distortion", distortion, (mono, expo)),
              ("reverb", reverb, (dist_out, room, damp, wet, width)), ("limiter", limiter, (rev_out,)),
              ("loss", loss, (lim_out,))]
    out = {}
    for name, fn, args in stages:
        fwd = jax.jit(fn)
        y = fwd(*args)
        ct = jnp.ones_like(y) if y.ndim == 0 else jnp.asarray(
            np.random.default_rng(3).standard_normal(y.shape) * 1e-3, y.dtype)

        def fwd_bwd(*a, fn=fn, ct=ct):
            _, vjp = jax.vjp(fn, *a)
            return vjp(ct)

        bwd = jax.jit(fwd_bwd)
        out[name] = {"fwd_ms": round(_median_ms(lambda: jax.block_until_ready(fwd(*args)), runs), 2),
                     "fwd_bwd_ms": round(_median_ms(lambda: jax.block_until_ready(bwd(*args)), runs), 2)}
    total_f = sum(v["fwd_ms"] for k, v in out.items() if k != "loss")
    total_g = sum(v["fwd_bwd_ms"] for v in out.values())
    for k, v in out.items():
        if k != "loss":
            v["fwd_share"] = round(v["fwd_ms"] / total_f, 3)
        v["grad_share"] = round(v["fwd_bwd_ms"] / total_g, 3)
    return out


def run_shape(name: str, shape: dict, args, pool_cls, note_cls) -> dict:
    import jax
    import jax.numpy as jnp

    from diffsynth.losses import DEFAULT_FFT_SIZES, loss_against, multi_resolution_stft_loss, precompute_target
    from diffsynth.parallel import batch_parallel
    from proxies.amsynth import calibration as cal
    from proxies.amsynth.spec import AMSYNTH

    b, sr, dur, hold = shape["batch"], shape["sample_rate"], shape["duration_s"], shape["hold_s"]
    presets = AMSYNTH.sample_normalized(np.random.default_rng(args.seed), b)
    config = cal.ProxyConfig(sample_rate=sr, duration_s=dur, hold_s=hold)
    n = jnp.asarray(presets, jnp.float32)
    target = jnp.asarray(np.random.default_rng(1).standard_normal((b, 2, config.n_samples)) * 0.1, jnp.float32)

    # TODO(render signature): the amsynth proxy's render gains traced pitch/velocity arrays; this
    # call renders the config's note and velocity.
    def render(x):
        return cal.render_normalized(x, config)

    def distances(x, t, sizes=tuple(args.fft_sizes)):
        return multi_resolution_stft_loss(render(x), t, fft_sizes=sizes)

    # the rows split over the local devices (diffsynth.parallel; on CPU one per core), and on one device
    fwd = jax.jit(batch_parallel(render, (True,)))
    grad = jax.jit(jax.value_and_grad(lambda x: jnp.mean(batch_parallel(distances, (True, True))(x, target))))
    fwd_one = jax.jit(render)
    grad_one = jax.jit(jax.value_and_grad(lambda x: jnp.mean(distances(x, target))))
    timed = {"fwd": lambda: jax.block_until_ready(fwd(n)), "grad": lambda: jax.block_until_ready(grad(n))}
    if tuple(args.fft_sizes) != DEFAULT_FFT_SIZES:  # the training loss is cheaper than the evaluation's distance
        grad_eval = jax.jit(jax.value_and_grad(lambda x: jnp.mean(batch_parallel(
            lambda y, t: distances(y, t, DEFAULT_FFT_SIZES), (True, True))(x, target))))
        timed["grad_eval_sizes"] = lambda: jax.block_until_ready(grad_eval(n))
    if len(jax.local_devices()) > 1:
        timed.update(fwd_one_device=lambda: jax.block_until_ready(fwd_one(n)),
                     grad_one_device=lambda: jax.block_until_ready(grad_one(n)))
    if args.precomputed_target:  # the target's spectra once (a search / matching loop), not per call
        spectra = jax.jit(precompute_target)(target)

        def loss_pre(x, s):
            return jnp.mean(loss_against(cal.render_normalized(x, config), s))

        grad_pre = jax.jit(jax.value_and_grad(loss_pre))
        timed["grad_pretarget"] = lambda: jax.block_until_ready(grad_pre(n, spectra))
    note = note_cls(60, 100, 0.0, hold)
    print(f"[{name}] batch {b}, {sr} Hz, {dur} s: compiling", flush=True)
    first = {k: _first(fn) for k, fn in timed.items()}
    with pool_cls("amsynth", workers=args.workers, sample_rate=sr) as pool:
        def plugin():
            audio, failures = pool.render_batch(presets, notes=(note,), duration_s=dur)
            if failures:
                raise RuntimeError(f"plugin render failures: {failures}")

        first["plugin"] = _first(plugin)
        times = _interleaved({**timed, "plugin": plugin}, args.runs)
    med = {k: statistics.median(v) for k, v in times.items()}
    audio_s = b * dur
    res = {
        f"{name}_fwd_vs_plugin": med["plugin"] / med["fwd"],
        f"{name}_grad_vs_plugin": med["plugin"] / med["grad"],
        f"{name}_fwd_xrt": audio_s / med["fwd"],
        f"{name}_grad_xrt": audio_s / med["grad"],
        f"{name}_plugin_xrt": audio_s / med["plugin"],
        f"{name}_fwd_s": med["fwd"],
        f"{name}_grad_s": med["grad"],
        f"{name}_plugin_s": med["plugin"],
        f"{name}_times_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        f"{name}_fwd_compile_s": first["fwd"] - med["fwd"],
        f"{name}_grad_compile_s": first["grad"] - med["grad"],
        f"{name}_shape": dict(shape),
    }
    res[f"{name}_fft_sizes"] = list(args.fft_sizes)
    if "grad_eval_sizes" in med:
        res[f"{name}_grad_eval_sizes_vs_plugin"] = med["plugin"] / med["grad_eval_sizes"]
        res[f"{name}_grad_eval_sizes_s"] = med["grad_eval_sizes"]
    for k in ("fwd", "grad"):
        if f"{k}_one_device" in med:
            res[f"{name}_{k}_one_device_vs_plugin"] = med["plugin"] / med[f"{k}_one_device"]
    if "grad_pretarget" in med:
        res[f"{name}_grad_pretarget_vs_plugin"] = med["plugin"] / med["grad_pretarget"]
        res[f"{name}_grad_pretarget_s"] = med["grad_pretarget"]
    for k in ("fwd_xrt", "grad_xrt", "plugin_xrt", "fwd_vs_plugin", "grad_vs_plugin", "grad_eval_sizes_vs_plugin",
              "fwd_one_device_vs_plugin",
              "grad_one_device_vs_plugin", "grad_pretarget_vs_plugin",
              "fwd_compile_s", "grad_compile_s"):
        if f"{name}_{k}" in res:
            print(f"{name}_{k:24s} {res[f'{name}_{k}']:10.2f}", flush=True)
    if not args.no_profile:
        prof = _profile(n, target, config, args.runs, tuple(args.fft_sizes))
        res[f"{name}_profile"] = prof
        print(f"[{name}] per-stage profile (ms; share of the stages' sum)")
        for stage, v in prof.items():
            fs = f"{100 * v['fwd_share']:5.1f} %" if "fwd_share" in v else "       "
            print(f"  {stage:11s} fwd {v['fwd_ms']:9.1f} {fs}   fwd+bwd {v['fwd_bwd_ms']:9.1f} "
                  f"{100 * v['grad_share']:5.1f} %", flush=True)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/proxy.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=None, metavar="OUT")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shapes", default="train,big", help="comma-separated subset of: " + ", ".join(SHAPES))
    p.add_argument("--no-profile", action="store_true", help="skip the per-stage profile")
    p.add_argument("--fft-sizes", default=None, help="FFT sizes of the gradient's loss, comma-separated "
                   "(default: configs/amsynth.toml's loss.fft_sizes, the training loss)")
    p.add_argument("--precomputed-target", action="store_true",
                   help="also time the gradient against precomputed target spectra (grad_pretarget)")
    args = p.parse_args(argv)
    try:
        args.fft_sizes = _fft_sizes(args.fft_sizes)
    except ValueError as e:
        p.error(f"--fft-sizes: {e}")
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or not shapes:
        p.error(f"--shapes: unknown {unknown}; choose from {list(SHAPES)}")

    from diffsynth import runtime  # before JAX starts its backend

    xla_on = runtime.configure_xla()
    import jax

    from proxies import host

    note_cls = host.Note
    pool_cls = host.RenderPool

    result = {}
    for name in shapes:
        result.update(run_shape(name, SHAPES[name], args, pool_cls, note_cls))
    result.update({
        "runs": args.runs,
        "plugin_workers": args.workers,
        "settings": {"xla_option": xla_on and runtime.XLA_OPTION in os.environ.get("XLA_FLAGS", ""),
                     "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
                     "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES")},
        "jax_version": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "proxy_devices": len(jax.local_devices()),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "machine": platform.platform(),
    })
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (see diffsynth.runtime)
    sys.exit(main())
