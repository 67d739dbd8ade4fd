"""Real-plugin render throughput: renders/s and x-real-time of amsynth through DawDreamer.

    python benchmarks/render.py [--quick] [--json OUT.json]

Measured in one run, for 16 kHz and 44.1 kHz, 1.5 s renders of one note (held 1.0 s) of random
presets (``AMSYNTH.sample_normalized``, the data-generation prior; about 1 in 5 has osc2 sync and
so gets a fresh plugin instance):

* ``raw``: set the values, add the note, one render, in this process: no determinism protocol
  (history-dependent output; the floor the protocol is compared with).
* ``protocol``: :class:`proxies.host.PluginHost` in this process (pre-roll, warm-up, flush, kept
  render; fresh instances for sync presets).
* ``protocol, no sync``: the same on the presets without sync (no fresh instances).
* ``pool x1`` / ``pool x2``: :class:`proxies.host.RenderPool` with 1 and 2 worker processes
  (protocol, noise and sync presets in forked render processes, audio sent back through a pipe;
  pool start-up excluded, reported apart); ``fork=sync`` forks only for sync presets (noise
  presets then render in the worker: faster, not reproducible).

Wall time (renders/s, x-real-time, ms/render) depends on what else the machine runs; the CPU
time per render (this process + the workers + their forked children) is the steadier figure.

Each figure is the median over ``runs`` timed batches (after one untimed warm-up batch). On a
shared machine compare rows of one run rather than runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxies import host as H  # noqa: E402
from proxies.amsynth.spec import AMSYNTH, uses_sync  # noqa: E402
from proxies.files import atomic_write_json  # noqa: E402

DURATION_S = 1.5
NOTES = (H.Note(60, 100, 0.0, 1.0),)


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pids: tuple[int, ...] = ()) -> float:
    """CPU seconds used so far by this process and by ``pids`` (with their reaped children)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    total = r.ru_utime + r.ru_stime
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in fields[11:15]) / _TICK  # utime stime cutime cstime
    return total


def _timed(fn, batch: np.ndarray, runs: int, pids: tuple[int, ...] = ()) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds per render of ``fn(batch)``, per timed run (after one warm-up run)."""
    fn(batch[: max(2, len(batch) // 4)])
    wall, cpu = [], []
    for _ in range(runs):
        c, t = _cpu_s(pids), time.perf_counter()
        fn(batch)
        wall.append((time.perf_counter() - t) / len(batch))
        cpu.append((_cpu_s(pids) - c) / len(batch))
    return wall, cpu


def _row(sample_rate: int, mode: str, workers: int, timed: tuple[list[float], list[float]], n_presets: int) -> dict:
    wall, cpu = timed
    med = statistics.median(wall)
    return {
        "sample_rate": sample_rate,
        "mode": mode,
        "workers": workers,
        "presets_per_run": n_presets,
        "renders_per_s": 1.0 / med,
        "x_realtime": DURATION_S / med,
        "ms_per_render": 1e3 * med,
        "cpu_ms_per_render": 1e3 * statistics.median(cpu),
        "runs_ms_per_render": [1e3 * x for x in wall],
    }


def run(quick: bool) -> dict:
    n_presets = 12 if quick else 40
    runs = 3 if quick else 5
    presets = AMSYNTH.sample_normalized(np.random.default_rng(0), n_presets)
    no_sync = AMSYNTH.sample_normalized(np.random.default_rng(1), 4 * n_presets)
    no_sync = no_sync[~uses_sync(no_sync)][:n_presets]
    rows: list[dict] = []
    startup: dict[str, float] = {}
    for sr in (16000, 44100):
        host = H.PluginHost("amsynth", sr)

        def raw(batch: np.ndarray) -> None:
            for x in batch:
                host.render_raw(x, NOTES, DURATION_S)

        def protocol(batch: np.ndarray) -> None:
            for x in batch:
                host.render(x, NOTES, DURATION_S)

        rows.append(_row(sr, "raw", 1, _timed(raw, presets, runs), n_presets))
        rows.append(_row(sr, "protocol", 1, _timed(protocol, presets, runs), n_presets))
        rows.append(_row(sr, "protocol, no sync", 1, _timed(protocol, no_sync, runs), n_presets))
        for workers, fork in ((1, True), (2, True), (2, "sync")):
            name = f"pool x{workers}" + (", fork=sync" if fork == "sync" else "")
            t = time.perf_counter()
            with H.RenderPool("amsynth", workers=workers, sample_rate=sr, fork=fork) as pool:
                startup[f"{name} @ {sr} Hz"] = time.perf_counter() - t

                def pooled(batch: np.ndarray) -> None:
                    _, failures = pool.render_batch(batch, NOTES, DURATION_S)
                    if failures:
                        raise RuntimeError(f"render failures: {failures}")

                rows.append(_row(sr, name, workers, _timed(pooled, presets, runs, pool.pids), n_presets))
        print(f"  {sr} Hz done", file=sys.stderr)
    return {
        "benchmark": "real-plugin render throughput (amsynth 1.13 via DawDreamer)",
        "duration_s": DURATION_S,
        "note": "MIDI 60, velocity 100, held 1.0 s",
        "sync_fraction": float(np.mean(uses_sync(presets))),
        "runs": runs,
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
        "pool_startup_s": startup,
        "results": rows,
    }


def print_table(result: dict) -> None:
    print(f"amsynth renders of {result['duration_s']} s ({result['note']}), random presets "
          f"({100 * result['sync_fraction']:.0f}% sync), median of {result['runs']} runs, "
          f"{result['machine']['cores']} cores: {result['machine']['cpu']}")
    print(f"load average at start: {result['machine']['load_average']}")
    print(f"{'sr':>6}  {'mode':<22} {'renders/s':>10} {'x realtime':>11} {'ms/render':>10} {'CPU ms/render':>14}")
    for r in result["results"]:
        print(f"{r['sample_rate']:>6}  {r['mode']:<22} {r['renders_per_s']:>10.1f} {r['x_realtime']:>11.1f} "
              f"{r['ms_per_render']:>10.2f} {r['cpu_ms_per_render']:>14.2f}")
    for k, v in result["pool_startup_s"].items():
        print(f"start-up {k}: {v:.2f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer presets and runs (about 30 s)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = p.parse_args(argv)
    result = run(args.quick)
    print_table(result)
    if args.json:
        atomic_write_json(args.json, result, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (diffsynth.runtime: faster JAX, same output)
    sys.exit(main())
