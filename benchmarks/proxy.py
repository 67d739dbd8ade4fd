"""amsynth proxy vs real plugin throughput, measured in one run.

    python benchmarks/proxy.py [--json OUT.json] [--batch 64] [--runs 3] [--workers 2]

Batch of ``--batch`` random presets from the sampling prior, 44.1 kHz, 1.5 s renders of one
note (60, velocity 100, held 1.0 s):

* ``proxy_fwd``: ``jax.jit(calibration.render_normalized)`` (calibration + render, exact mode,
  float32) on the batch;
* ``proxy_grad``: value and gradient of the mean multi-resolution STFT distance
  (``diffsynth.losses``) of the rendered batch to a target batch, w.r.t. the normalized inputs;
* ``plugin``: :class:`proxies.host.RenderPool` with ``--workers`` processes and the host's
  determinism protocol (what the data pipeline uses), pool start-up excluded.

Reported as x-real-time (seconds of audio per second of wall time): median of ``--runs`` timed
repetitions after one untimed (compiling / warming) one. Compile times are reported apart. The
machine is shared: compare the rows of one run, not runs.
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

DURATION_S = 1.5
HOLD_S = 1.0
SAMPLE_RATE = 44100


def _timed(fn, runs: int) -> tuple[float, float]:
    """(first call s, median of ``runs`` later calls s)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/proxy.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=None, metavar="OUT")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from diffsynth.losses import multi_resolution_stft_loss
    from proxies import host
    from proxies.amsynth import calibration as cal
    from proxies.amsynth.spec import AMSYNTH

    presets = AMSYNTH.sample_normalized(np.random.default_rng(args.seed), args.batch)
    config = cal.ProxyConfig(sample_rate=SAMPLE_RATE, duration_s=DURATION_S, hold_s=HOLD_S)
    audio_s = args.batch * DURATION_S
    n = jnp.asarray(presets, jnp.float32)

    fwd = jax.jit(cal.render_normalized, static_argnums=1)
    fwd_first, fwd_t = _timed(lambda: jax.block_until_ready(fwd(n, config)), args.runs)

    target = jnp.asarray(np.random.default_rng(1).standard_normal((args.batch, 2, config.n_samples)) * 0.1,
                         jnp.float32)

    def loss(x):
        return jnp.mean(multi_resolution_stft_loss(cal.render_normalized(x, config), target))

    grad = jax.jit(jax.value_and_grad(loss))
    grad_first, grad_t = _timed(lambda: jax.block_until_ready(grad(n)), args.runs)

    note = host.Note(60, 100, 0.0, HOLD_S)
    with host.RenderPool("amsynth", workers=args.workers, sample_rate=SAMPLE_RATE) as pool:
        plug_first, plug_t = _timed(lambda: pool.render_batch(presets, notes=(note,), duration_s=DURATION_S),
                                    args.runs)

    result = {
        "proxy_fwd_xrt": audio_s / fwd_t,
        "proxy_grad_xrt": audio_s / grad_t,
        "plugin_xrt": audio_s / plug_t,
        "proxy_fwd_s": fwd_t,
        "proxy_grad_s": grad_t,
        "plugin_s": plug_t,
        "proxy_fwd_compile_s": fwd_first - fwd_t,
        "proxy_grad_compile_s": grad_first - grad_t,
        "batch": args.batch,
        "sample_rate": SAMPLE_RATE,
        "duration_s": DURATION_S,
        "plugin_workers": args.workers,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "machine": platform.platform(),
    }
    result["proxy_fwd_vs_plugin"] = result["proxy_fwd_xrt"] / result["plugin_xrt"]
    result["proxy_grad_vs_plugin"] = result["proxy_grad_xrt"] / result["plugin_xrt"]
    for k in ("proxy_fwd_xrt", "proxy_grad_xrt", "plugin_xrt", "proxy_fwd_vs_plugin", "proxy_grad_vs_plugin",
              "proxy_fwd_compile_s", "proxy_grad_compile_s"):
        print(f"{k:24s} {result[k]:10.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
