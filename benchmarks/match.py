"""Cost of the two ways of improving a preset after the model: proxy refinement and CMA-ES.

    python benchmarks/match.py --run runs/amsynth [--batch 1 8] [--steps 10] [--renders 112] [--json OUT]

For the run's data settings (sample rate, length, note) and loss FFT sizes:

* ``refine B=k``: one gradient step of :class:`training.refine.ProxyRefiner` on k targets at
  once (the proxy's relaxed render + multi-resolution STFT distance + Adam), wall seconds per
  step and per step per target; compilation reported apart (the persistent cache makes it a
  one-off per machine and proxy version).
* ``cma``: CMA-ES through the real plugin (:func:`training.cma.cma_search`), plugin renders
  per second and seconds per 100 renders per target, 4 targets in lockstep.

Random presets serve as starts and targets (their plugin renders). On a shared machine compare
rows of one run rather than runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory (its config sets the shapes)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="refinement batch sizes (1 8)")
    p.add_argument("--steps", type=int, default=10, help="timed refinement steps per batch size (10)")
    p.add_argument("--renders", type=int, default=112, help="CMA-ES renders per target (112)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)

    from training.config import from_dict
    from training.data import sample_presets, spec_of
    from training.cli import enable_compilation_cache
    from training.cma import cma_search
    from training.refine import ProxyRefiner
    from training.search import NoteRenderer
    from training.heads import head_layout

    enable_compilation_cache()
    cfg = from_dict(json.loads((Path(a.run) / "config.json").read_text()))
    spec = spec_of(cfg.data.synth)
    layout = head_layout(spec, cfg.data.frozen)
    rng = np.random.default_rng(0)
    rows = []
    with NoteRenderer(cfg.data) as renderer:
        n_max = max(max(a.batch), 4)
        starts = sample_presets(spec, rng, n_max, frozen=dict(cfg.data.frozen))
        targets, _ = renderer.render_at(sample_presets(spec, rng, n_max, frozen=dict(cfg.data.frozen)),
                                        [cfg.data.note] * n_max)
        for b in a.batch:
            r = ProxyRefiner(cfg.data, tuple(cfg.loss.fft_sizes), b)
            first = r.refine(starts[:b], targets[:b], 1, 1)
            res = r.refine(starts[:b], targets[:b], a.steps, 1)
            rows.append({"what": f"refine B={b}", "compile_s": round(first.compile_seconds, 1),
                         "s_per_step": res.seconds / a.steps, "s_per_step_per_target": res.seconds / a.steps / b})
            print(rows[-1], flush=True)
        t0 = time.perf_counter()
        s = cma_search(lambda n, rr: renderer.render_at(n, [cfg.data.note] * len(n)), targets[:4], starts[:4],
                       layout, a.renders, cfg.data.sample_rate, sigma0=0.25)
        dt = time.perf_counter() - t0
        total = int(s.renders.sum())
        rows.append({"what": "cma (4 targets in lockstep)", "renders_per_s": total / dt,
                     "s_per_100_renders_per_target": dt / 4 / (a.renders / 100)})
        print(rows[-1], flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (diffsynth.runtime: faster JAX, same output)
    sys.exit(main())
