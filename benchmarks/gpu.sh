#!/usr/bin/env bash
# GPU benchmark, one command:  bash benchmarks/gpu.sh [OUT_DIR]
#
# 1. a virtualenv (.venv, or $VENV) with this package, and a CUDA jaxlib in it when JAX does not
#    see a GPU yet ("jax[cuda13]" or "jax[cuda12]" for the driver's CUDA version, at the installed
#    jax version; override with JAX_CUDA_EXTRA=cuda12);
# 2. the amsynth proxy (through the synth contract: proxies.synth.proxy_renderer) at 44.1 kHz,
#    1.5 s, note held 1 s: jitted forward render, and value + gradient of the batch-mean
#    multi-resolution STFT distance w.r.t. the normalized presets (what a spectral step costs),
#    at batches $BATCHES (default 1024 2048 4096): compile time, median time of $RUNS runs,
#    sounds/s, x real time, device peak memory; a batch that does not fit is recorded as an error;
# 3. python -m benchmarks.train (training step rates) for $TRAIN_BATCHES (default 32 256 1024)
#    with the default config's hybrid schedule.
# Everything goes to OUT_DIR (default benchmarks/results/gpu-<date>): proxy.json, train-<B>.json,
# env.json (GPU, driver, versions) and gpu.json (all of it in one file).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}
VENV=${VENV:-.venv}
BATCHES=${BATCHES:-"1024 2048 4096"}
TRAIN_BATCHES=${TRAIN_BATCHES:-"32 256 1024"}
RUNS=${RUNS:-5}
TRAIN_STEPS=${TRAIN_STEPS:-20}
TRAIN_SET=${TRAIN_SET:-}  # more benchmarks.train options, e.g. "--set loss.spectral_batch_size=0"
PROXY_SR=${PROXY_SR:-44100}
PROXY_DURATION=${PROXY_DURATION:-1.5}
PROXY_HOLD=${PROXY_HOLD:-1.0}
# diffsynth.runtime's settings are for XLA:CPU (a CPU loop option, a glibc malloc tunable); off here
export DIFFSYNTH_RUNTIME=${DIFFSYNTH_RUNTIME:-0}
mkdir -p "$OUT"
PY="$VENV/bin/python"

command -v nvidia-smi >/dev/null 2>&1 || { echo "[gpu] nvidia-smi not found: this script needs an NVIDIA GPU" >&2; exit 1; }
nvidia-smi

# ---------------------------------------------------------------- 1. environment
if [ ! -x "$PY" ]; then
  echo "[gpu] creating $VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
fi
"$PY" -c 'import training.train, proxies.host, diffsynth' 2>/dev/null || "$PY" -m pip install -q -e ".[test]"
if ! "$PY" -c 'import jax, sys; sys.exit(0 if jax.default_backend() == "gpu" else 1)' 2>/dev/null; then
  cuda=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -1)
  extra=${JAX_CUDA_EXTRA:-$([ "${cuda:-0}" -ge 13 ] && echo cuda13 || echo cuda12)}
  jax_version=$("$PY" -c 'import jax; print(jax.__version__)')
  echo "[gpu] installing jax[$extra]==$jax_version (driver CUDA ${cuda:-?})"
  "$PY" -m pip install -q "jax[$extra]==$jax_version"
fi
"$PY" -c 'import jax, sys; print("[gpu] JAX devices:", jax.devices()); sys.exit(0 if jax.default_backend() == "gpu" else 1)' \
  || { echo "[gpu] JAX still does not see a GPU (check the driver and the jax[cuda*] wheel)" >&2; exit 1; }

"$PY" - "$OUT/env.json" <<'PY'
import json, platform, subprocess, sys
import jax, jaxlib
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip().splitlines()
json.dump({"gpus": smi, "jax": jax.__version__, "jaxlib": jaxlib.__version__, "backend": jax.default_backend(),
           "devices": [str(d) for d in jax.devices()], "python": sys.version.split()[0],
           "machine": platform.platform()}, open(sys.argv[1], "w"), indent=1)
PY

# ---------------------------------------------------------------- 2. the proxy: forward and gradient
"$PY" - "$OUT/proxy.json" "$RUNS" "$PROXY_SR" "$PROXY_DURATION" "$PROXY_HOLD" $BATCHES <<'PY'
import json, statistics, sys, time

import jax
import jax.numpy as jnp
import numpy as np

from diffsynth.losses import multi_resolution_stft_loss
from proxies.synth import ProxyRender, get_synth, proxy_renderer

out_path, runs, batches = sys.argv[1], int(sys.argv[2]), [int(b) for b in sys.argv[6:]]
synth = get_synth("amsynth")
config = ProxyRender(sample_rate=int(sys.argv[3]), duration_s=float(sys.argv[4]), hold_s=float(sys.argv[5]))
render = proxy_renderer(synth, config)


def timed(fn, *args):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"compile_and_first_s": round(first, 3), "median_s": round(med, 5),
            "times_s": [round(t, 5) for t in times]}, med


def peak_bytes():
    try:
        return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    except Exception:
        return None


results = {"sample_rate": config.sample_rate, "duration_s": config.duration_s, "hold_s": config.hold_s,
           "runs": runs, "device": str(jax.devices()[0]), "batches": {}}
for b in batches:
    rng = np.random.default_rng(0)
    n = jnp.asarray(synth.sample_presets(rng, b), jnp.float32)
    pitch = jnp.full((b,), 60, jnp.int32)
    velocity = jnp.full((b,), 100, jnp.int32)
    target = jnp.asarray(rng.standard_normal((b, synth.channels, config.n_samples)) * 0.1, jnp.float32)
    fwd = jax.jit(lambda x: render(x, pitch, velocity))
    grad = jax.jit(jax.value_and_grad(lambda x: jnp.mean(multi_resolution_stft_loss(render(x, pitch, velocity),
                                                                                     target))))
    row = {}
    for name, fn in (("fwd", fwd), ("grad", grad)):
        try:
            r, med = timed(fn, n)
            r.update(sounds_per_s=round(b / med, 1), x_real_time=round(b * config.duration_s / med, 1),
                     device_peak_bytes=peak_bytes())
        except Exception as e:  # e.g. RESOURCE_EXHAUSTED: recorded, the next batch still runs
            r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:500]}"}
        row[name] = r
        print(f"[proxy] batch {b:5d} {name:4s} {json.dumps(r)[:300]}", flush=True)
    results["batches"][str(b)] = row
    del fwd, grad, n, target
    jax.clear_caches()
json.dump(results, open(out_path, "w"), indent=1)
print(f"[proxy] wrote {out_path}")
PY

# ---------------------------------------------------------------- 3. training step rates
for b in $TRAIN_BATCHES; do
  echo "[gpu] python -m benchmarks.train, optim.batch_size=$b"
  "$PY" -m benchmarks.train --config configs/amsynth.toml --steps "$TRAIN_STEPS" \
      --set optim.batch_size="$b" --set data.n_train="$(( b > 3000 ? b : 3000 ))" \
      $TRAIN_SET --json "$OUT/train-$b.json" \
    || echo "{\"batch_size\": $b, \"error\": \"benchmarks.train exited with an error (see the log)\"}" > "$OUT/train-$b.json"
done

# ---------------------------------------------------------------- all in one file
"$PY" - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
merged = {"env": json.loads((out / "env.json").read_text()), "proxy": json.loads((out / "proxy.json").read_text()),
          "train": {p.stem.split("-", 1)[1]: json.loads(p.read_text()) for p in sorted(out.glob("train-*.json"))}}
(out / "gpu.json").write_text(json.dumps(merged, indent=1))
print(f"[gpu] wrote {out / 'gpu.json'}")
PY
