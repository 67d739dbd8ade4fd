"""Data-parallel training (jax.sharding): [run] keys, the device/batch checks, and a short fit on two
(forced host) devices, parameter steps then spectral steps (the proxy's sounds split over the
devices), that matches the one-device fit step for step and whose checkpoint resumes on one
device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.config import ConfigError, RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("override, pattern", [
    ("run.devices=-1", r"run\.devices: expected an integer >= 0"),
    ("run.process_id=1", r"run\.distributed: expected true when"),
    ("run.coordinator_address=host", r"run\.coordinator_address: expected host:port"),
    ("run.num_processes=-2", r"run\.num_processes"),
])
def test_run_keys_are_checked(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_multi_host_keys_load():
    cfg = load_config(None, ["run.distributed=true", "run.coordinator_address=10.0.0.1:1234",
                             "run.num_processes=2", "run.process_id=1", "run.devices=1"])
    assert (cfg.run.distributed, cfg.run.num_processes, cfg.run.process_id) == (True, 2, 1)


def test_more_devices_than_this_process_has_is_a_config_error():
    import jax

    from training.state import make_mesh

    n = len(jax.local_devices())
    assert make_mesh(RunConfig(), 4 * n).size == n
    with pytest.raises(ConfigError, match=r"run\.devices: expected at most"):
        make_mesh(RunConfig(devices=n + 1), 4)


# The child process: XLA_FLAGS gives it two CPU devices. It fits the same tiny run on one
# device (6 steps) and on two (4 steps, then resumed on one device from the two-device
# checkpoint), and prints the per-step losses.
CHILD = r"""
import csv, json, sys
from pathlib import Path

from diffsynth.runtime import configure_xla

configure_xla()
import jax

# a cache of this test's own: the resumed one-device fit reuses the first one's compilations
jax.config.update("jax_compilation_cache_dir", str(Path(sys.argv[1]) / "jax-cache"))

from training.config import ConfigError, RunConfig, load_config
from training.state import make_mesh
from training.train import train_and_evaluate


def cfg(tmp, name, devices):
    return load_config(Path(sys.argv[2]) / "configs" / "amsynth.toml", [
        f"run.name={name}", f"run.runs_dir={tmp / 'runs'}", f"data.cache_dir={tmp / 'data'}", f"run.devices={devices}",
        "data.n_train=16", "data.n_val=4", "data.n_test=4", "data.shard_size=8", "data.workers=1",
        "data.duration_s=0.25", "data.hold_s=0.15", "features.n_fft=512", "features.hop=128", "features.n_mels=32",
        "model.channels=[4, 8]", "model.hidden=16", "loss.schedule=hybrid", "loss.warmup_steps=3",
        "loss.ramp_steps=1", "loss.fft_sizes=[128, 512]",
        "optim.batch_size=4", "optim.steps=6", "optim.log_every=1", "optim.eval_every=2",
        "optim.checkpoint_every=3", "optim.lr_warmup_steps=0", "eval.n_random=4", "eval.n_factory=0",
        "eval.val_distance=param", "eval.batch_size=4"])


def losses(c):
    with open(c.run_dir / "metrics" / "train.csv") as f:
        return [[int(r["step"]), float(r["loss"])] for r in csv.DictReader(f)]


if __name__ == "__main__":
    tmp = Path(sys.argv[1])
    out = {"devices": len(jax.devices()), "all_of_3": make_mesh(RunConfig(), 3).size,
           "all_of_4": make_mesh(RunConfig(), 4).size}
    try:
        make_mesh(RunConfig(devices=2), 3)
    except ConfigError as e:
        out["indivisible"] = str(e)
    one = cfg(tmp, "one", 1)
    train_and_evaluate(one, progress=False, stop_after_step=6, log=lambda *_: None)
    logs = []
    train_and_evaluate(cfg(tmp, "two", 2), progress=False, stop_after_step=4, log=logs.append)
    train_and_evaluate(cfg(tmp, "two", 1), progress=False, stop_after_step=6, log=logs.append)
    out.update(one=losses(one), two=losses(cfg(tmp, "two", 1)), logs=logs)
    print("RESULT " + json.dumps(out))
"""


@pytest.mark.plugin
def test_two_devices_match_one_and_the_checkpoint_resumes_on_one(tmp_path, amsynth_path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    r = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(ROOT)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert out["devices"] == 2
    assert "optim.batch_size: expected a multiple of the 2 devices" in out["indivisible"]
    assert (out["all_of_3"], out["all_of_4"]) == (1, 2)  # run.devices = 0: as many as split the batch
    assert any("data parallel over 2 devices" in m for m in out["logs"]), out["logs"]
    assert any("resuming" in m and "from step 4" in m for m in out["logs"]), out["logs"]
    one, two = out["one"], out["two"]
    assert [s for s, _ in one] == [s for s, _ in two] == [1, 2, 3, 4, 5, 6]
    for (step, a), (_, b) in zip(one, two):  # steps 1-4 on two devices, 5-6 resumed on one
        assert b == pytest.approx(a, rel=1e-5), (step, a, b)
