"""Training configuration: TOML -> frozen dataclasses that refuse what they do not know.

A config file has one table per section (``[run]``, ``[data]``, ``[features]``, ``[model]``,
``[loss]``, ``[optim]``, ``[eval]``); every key is optional and defaults to the value declared
below. A file may start with ``extends = "amsynth.toml"`` (a path relative to it): it then holds
only the keys that differ from that file. Unknown sections or keys, values of the wrong type, values outside their allowed set or
range, and inconsistent combinations all fail in :func:`load_config`, before any work starts,
with a message naming the key, what was expected, what came, and how to fix it.

Command-line overrides use ``--set section.key=value``; the value is parsed as a TOML literal
(``--set optim.lr=3e-4``, ``--set loss.fft_sizes=[256,1024]``), falling back to a bare string
(``--set run.name=try2``), and is type-checked like a value from the file.

Derived values (``DataConfig.n_samples``, ``FeatureConfig.n_frames``, ...) are properties
computed in exactly one place.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence


class ConfigError(ValueError):
    """A config value that is unknown, mistyped, out of range or inconsistent."""


class FrozenMap(dict):
    """A read-only, hashable dict (so configs stay immutable and hashable)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("config values are read-only; build a new config instead")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]


# --------------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class RunConfig:
    """[run]: what the run is called and where it goes (``<runs_dir>/<name>/``)."""

    name: str = ""  # empty: the synth's name (data.synth; a probed plugin's file name)
    seed: int = 0  # model init and batch order
    runs_dir: str = "runs"
    # data parallelism (jax.sharding): a mesh over the batch axis, parameters replicated
    devices: int = 0  # local devices used by this process (0: all); optim.batch_size must divide by the total
    distributed: bool = False  # several hosts: jax.distributed.initialize before anything else
    coordinator_address: str = ""  # "host:port" of process 0 (empty: JAX detects it, e.g. on SLURM)
    num_processes: int = 0  # processes in the job (0: JAX detects it)
    process_id: int = -1  # this process's index (-1: JAX detects it)

    def validate(self) -> None:
        _check_runs_dir(self.runs_dir)
        _require("/" not in self.name and self.name not in (".", ".."),
                 "run.name", "a plain name without '/' (or empty: the synth's name)", self.name,
                 "pick a plain directory name")
        _require(0 <= self.devices <= 65536, "run.devices", "an integer >= 0 (0: all local devices)", self.devices)
        _require(self.num_processes >= 0, "run.num_processes", "an integer >= 0 (0: detected by JAX)",
                 self.num_processes)
        _require(self.process_id >= -1 and (self.num_processes == 0 or self.process_id < self.num_processes),
                 "run.process_id", f"an integer in [0, run.num_processes = {self.num_processes}) (-1: detected)",
                 self.process_id)
        _require(not self.coordinator_address or ":" in self.coordinator_address, "run.coordinator_address",
                 "host:port of process 0 (or empty: detected by JAX)", self.coordinator_address)
        if not self.distributed:
            _require(not self.coordinator_address and self.num_processes in (0, 1) and self.process_id in (-1, 0),
                     "run.distributed", "true when run.coordinator_address, run.num_processes or "
                     "run.process_id is set", self.distributed, "set run.distributed = true for a multi-host run")


@dataclass(frozen=True)
class DataConfig:
    """[data]: which presets are sampled and how they are rendered through the real plugin.

    ``factory_prior_weight`` mixes the two sampling priors: each training and validation preset is
    drawn from the prior fitted to the factory presets with this probability and from the spec's
    uniform prior otherwise (0 = uniform only, 1 = factory-fitted only); the fit leaves out the
    ``eval.n_factory`` factory targets, and the test split stays uniform
    (``training.data.training_factory_prior``). ``frozen`` pins parameters (name ->
    normalized value) in every sampled preset; frozen parameters are not predicted.
    """

    synth: str = "amsynth"  # a registered synth (proxies.synth.list_synths) or vst:/path/Plugin.so
    spec: str = ""  # probed spec JSON of a vst: synth (empty: found next to the plugin)
    seed: int = 0  # preset sampling (independent of run.seed, so datasets are shared by runs)
    n_train: int = 6000
    n_val: int = 128
    n_test: int = 256
    factory_prior_weight: float = 0.0
    frozen: Mapping[str, float] = field(default_factory=lambda: FrozenMap())
    sample_rate: int = 16000
    duration_s: float = 1.0
    note: int = 60  # the note of the held-out test split (and of every render when note_range is empty)
    velocity: int = 100
    # Training and validation notes (MIDI, inclusive [low, high]) and velocities, drawn per preset
    # (seeded): the model hears many notes and is told which. Empty: every preset plays data.note /
    # data.velocity. With a note range, the training presets are also rendered at data.note (the
    # "gallery" split) for the nearest-neighbour lookup at the held-out sets' note.
    note_range: tuple[int, ...] = (36, 84)
    velocity_range: tuple[int, ...] = (70, 127)
    # The gallery's sounds (the training presets again, at data.note) join the training split: rendered
    # anyway for the lookup, they double the sounds the model learns from at no rendering cost. Off by
    # default: it helped the network alone on random targets and hurt factory ones (README, training
    # section). Changes no rendered file (not in the dataset's fingerprint); without a note range
    # there is no gallery and this does nothing.
    train_on_gallery: bool = False
    hold_s: float = 0.6
    workers: int = 2
    backend: Literal["process", "ray"] = "process"  # render with the local process pool, or Ray tasks
    ray_address: str = ""  # data.backend = "ray": cluster address (empty: this process's runtime or a local one)
    shard_size: int = 500
    audio_dtype: Literal["float16", "float32"] = "float16"
    cache_dir: str = "data"

    @property
    def n_samples(self) -> int:
        """Samples per rendered sound (the one place this is derived)."""
        from proxies.synth import render_samples  # noqa: PLC0415  (light: NumPy only)

        return render_samples(self.duration_s, self.sample_rate)

    def validate(self) -> None:
        _check_synth(self)
        _require(self.n_train >= 1, "data.n_train", "an integer >= 1", self.n_train)
        _require(self.n_val >= 1, "data.n_val", "an integer >= 1", self.n_val)
        _require(self.n_test >= 1, "data.n_test", "an integer >= 1", self.n_test)
        _require(0.0 <= self.factory_prior_weight <= 1.0, "data.factory_prior_weight",
                 "a float in [0, 1] (0 = uniform prior, 1 = factory-fitted prior)", self.factory_prior_weight)
        _require(8000 <= self.sample_rate <= 192000, "data.sample_rate", "an integer in [8000, 192000] Hz",
                 self.sample_rate)
        _require(0.05 <= self.duration_s <= 30.0, "data.duration_s", "seconds in [0.05, 30]", self.duration_s)
        _require(0 <= self.note <= 127, "data.note", "a MIDI note in [0, 127]", self.note)
        _require(1 <= self.velocity <= 127, "data.velocity", "a MIDI velocity in [1, 127]", self.velocity)
        for key, lo, hi in (("note_range", 0, 127), ("velocity_range", 1, 127)):
            r = getattr(self, key)
            _require(len(r) == 0 or (len(r) == 2 and lo <= r[0] <= r[1] <= hi), f"data.{key}",
                     f"[] or [low, high] with {lo} <= low <= high <= {hi}", list(r))
        _require(0.0 < self.hold_s <= self.duration_s, "data.hold_s",
                 f"seconds in (0, data.duration_s = {self.duration_s}]", self.hold_s,
                 "the note must be released inside the render so its release is heard")
        _require(1 <= self.workers <= 256, "data.workers", "an integer in [1, 256]", self.workers)
        _require(self.backend == "ray" or not self.ray_address, "data.ray_address",
                 'empty with data.backend = "process"', self.ray_address, 'set data.backend = "ray" to use Ray')
        _require(self.shard_size >= 1, "data.shard_size", "an integer >= 1", self.shard_size)
        for name, value in self.frozen.items():
            _require(0.0 <= value <= 1.0, f"data.frozen.{name}", "a normalized value in [0, 1]", value)


@dataclass(frozen=True)
class FeatureConfig:
    """[features]: the network's input, computed in JAX inside the training step.

    ``logmel``: log-mel spectrogram (dB) [frames, n_mels]; ``mfcc``: [frames, n_mfcc];
    ``raw``: the waveform itself [n_samples]. All use the mono mix of the stereo render.
    """

    kind: Literal["logmel", "mfcc", "raw"] = "logmel"
    n_fft: int = 1024
    hop: int = 512
    n_mels: int = 64
    n_mfcc: int = 20
    f_min_hz: float = 20.0
    f_max_hz: float = 8000.0
    top_db: float = 80.0

    def n_frames(self, n_samples: int) -> int:
        """STFT frames of a centred STFT (librosa ``center=True``) of ``n_samples`` samples."""
        return 1 + n_samples // self.hop

    def validate(self) -> None:
        _require(_is_pow2(self.n_fft) and 64 <= self.n_fft <= 8192, "features.n_fft",
                 "a power of two in [64, 8192]", self.n_fft)
        _require(1 <= self.hop <= self.n_fft, "features.hop", f"an integer in [1, features.n_fft = {self.n_fft}]",
                 self.hop)
        _require(4 <= self.n_mels <= 256, "features.n_mels", "an integer in [4, 256]", self.n_mels)
        _require(1 <= self.n_mfcc <= self.n_mels, "features.n_mfcc",
                 f"an integer in [1, features.n_mels = {self.n_mels}]", self.n_mfcc)
        _require(0.0 <= self.f_min_hz < self.f_max_hz, "features.f_min_hz",
                 f"a frequency in [0, features.f_max_hz = {self.f_max_hz})", self.f_min_hz)
        _require(10.0 <= self.top_db <= 200.0, "features.top_db", "a dB range in [10, 200]", self.top_db)


@dataclass(frozen=True)
class ModelConfig:
    """[model]: the encoder.

    ``cnn``: 2-D CNN on the log-mel spectrogram (default). ``lstm``: LSTM over MFCC frames
    (deepDIVA, RenderMan). ``rawcnn``: end-to-end raw-audio CNN (InverSynth: a strided 1-D conv
    front end, then 2-D convolutions over (time, filters)).
    """

    kind: Literal["cnn", "lstm", "rawcnn"] = "cnn"
    # What the heads output (training/heads.py): "regression" (one preset: a sigmoid per continuous
    # parameter), "bins" (each continuous parameter as a distribution over `bins` ordinal values: many
    # answers, sampled as candidates), "mixture" (`hypotheses` whole presets and a score for each,
    # trained winner-takes-all), "flow" (conditional flow matching over the continuous parameters, the
    # categoricals from a decoder that sees the continuous values drawn: a distribution of whole presets,
    # sampled with `flow_steps` Euler steps).
    head: Literal["regression", "bins", "mixture", "flow"] = "regression"
    bins: int = 16
    hypotheses: int = 8
    flow_steps: int = 16
    flow_hidden: int = 256  # width of the flow's velocity network and of its categorical decoder
    channels: tuple[int, ...] = (8, 16, 32, 32)  # 2-D conv blocks (cnn, rawcnn)
    hidden: int = 256  # dense layer before the heads
    lstm_hidden: int = 128
    lstm_layers: int = 2
    raw_filters: int = 64  # rawcnn front end: filters of the 1-D convolutions
    raw_kernel: int = 64
    raw_stride: int = 16

    def validate(self) -> None:
        _require(1 <= len(self.channels) <= 8 and all(1 <= c <= 1024 for c in self.channels), "model.channels",
                 "1 to 8 integers in [1, 1024]", list(self.channels))
        _require(1 <= self.hidden <= 8192, "model.hidden", "an integer in [1, 8192]", self.hidden)
        _require(1 <= self.lstm_hidden <= 4096, "model.lstm_hidden", "an integer in [1, 4096]", self.lstm_hidden)
        _require(1 <= self.lstm_layers <= 8, "model.lstm_layers", "an integer in [1, 8]", self.lstm_layers)
        _require(1 <= self.raw_filters <= 1024, "model.raw_filters", "an integer in [1, 1024]", self.raw_filters)
        _require(2 <= self.raw_kernel <= 4096, "model.raw_kernel", "an integer in [2, 4096]", self.raw_kernel)
        _require(2 <= self.bins <= 256, "model.bins", "an integer in [2, 256]", self.bins)
        _require(2 <= self.hypotheses <= 64, "model.hypotheses", "an integer in [2, 64]", self.hypotheses)
        _require(1 <= self.flow_steps <= 256, "model.flow_steps", "an integer in [1, 256]", self.flow_steps)
        _require(8 <= self.flow_hidden <= 4096, "model.flow_hidden", "an integer in [8, 4096]", self.flow_hidden)
        _require(1 <= self.raw_stride <= self.raw_kernel, "model.raw_stride",
                 f"an integer in [1, model.raw_kernel = {self.raw_kernel}]", self.raw_stride)


@dataclass(frozen=True)
class LossConfig:
    """[loss]: what the encoder is trained on.

    ``param``: parameter loss only (MSE on normalized continuous values + cross-entropy on
    categoricals). ``spectral``: multi-resolution STFT distance between the proxy's render of the
    prediction (relaxed mode: categoricals as probability mixtures) and the target audio.
    ``hybrid``: ``warmup_steps`` of parameter loss only, then a linear ramp over ``ramp_steps``
    of the spectral weight from 0 to ``spectral_weight`` while the parameter weight goes from
    ``param_weight`` to ``hybrid_param_weight_end`` (Masuda & Saito).
    """

    schedule: Literal["param", "spectral", "hybrid"] = "hybrid"
    param_weight: float = 1.0
    categorical_weight: float = 0.1  # cross-entropy relative to the continuous MSE
    spectral_weight: float = 2.0
    hybrid_param_weight_end: float = 1.0
    warmup_steps: int = 1000
    ramp_steps: int = 25
    fft_sizes: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    spectral_batch_size: int = 8  # sounds of each batch rendered by the proxy (0 or > batch: all)
    balance_spectral_grads: bool = True  # each parameter gets an equal share (losses.balance_gradients)
    categorical_relaxation: Literal["softmax", "straight_through"] = "straight_through"
    # Parameters whose outputs receive the spectral gradient (the others get only the parameter
    # loss). [] (default) = the synth's own choice (proxies.synth.Synth.spectral_params: for
    # amsynth those whose spectral-loss gradient points towards the target, measured);
    # ["all"] = every learned parameter, categoricals included.
    spectral_params: tuple[str, ...] = ()

    def validate(self) -> None:
        for key in ("param_weight", "categorical_weight", "spectral_weight", "hybrid_param_weight_end"):
            v = getattr(self, key)
            _require(v >= 0.0 and math.isfinite(v), f"loss.{key}", "a finite float >= 0", v)
        _require(self.warmup_steps >= 0, "loss.warmup_steps", "an integer >= 0", self.warmup_steps)
        _require(self.ramp_steps >= 0, "loss.ramp_steps", "an integer >= 0", self.ramp_steps)
        _require(self.spectral_batch_size >= 0, "loss.spectral_batch_size", "an integer >= 0 (0: whole batch)",
                 self.spectral_batch_size)
        _require(len(self.fft_sizes) >= 1 and all(_is_pow2(n) and 16 <= n <= 8192 for n in self.fft_sizes),
                 "loss.fft_sizes", "1 or more powers of two in [16, 8192]", list(self.fft_sizes))
        if self.schedule == "param":
            _require(self.param_weight > 0, "loss.param_weight", "> 0 with loss.schedule = 'param'", self.param_weight)
        if self.schedule in ("spectral", "hybrid"):
            _require(self.spectral_weight > 0, "loss.spectral_weight",
                     f"> 0 with loss.schedule = {self.schedule!r}", self.spectral_weight)


@dataclass(frozen=True)
class OptimConfig:
    """[optim]: optax optimiser, batch and step budget, logging and checkpoint cadence."""

    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    lr_warmup_steps: int = 100  # linear warm-up from 0; capped at steps // 2
    weight_decay: float = 0.0
    grad_clip_norm: float = 1.0  # 0 disables clipping
    batch_size: int = 32
    steps: int = 2000
    log_every: int = 25
    eval_every: int = 100
    checkpoint_every: int = 100

    @property
    def effective_lr_warmup_steps(self) -> int:
        return min(self.lr_warmup_steps, self.steps // 2)

    def validate(self) -> None:
        _require(0.0 < self.lr <= 1.0, "optim.lr", "a learning rate in (0, 1]", self.lr)
        _require(self.lr_warmup_steps >= 0, "optim.lr_warmup_steps", "an integer >= 0", self.lr_warmup_steps)
        _require(self.weight_decay >= 0.0, "optim.weight_decay", "a float >= 0", self.weight_decay)
        _require(self.grad_clip_norm >= 0.0, "optim.grad_clip_norm", "a float >= 0 (0 disables)", self.grad_clip_norm)
        _require(1 <= self.batch_size <= 65536, "optim.batch_size", "an integer in [1, 65536]", self.batch_size)
        _require(self.steps >= 1, "optim.steps", "an integer >= 1", self.steps)
        for key in ("log_every", "eval_every", "checkpoint_every"):
            _require(getattr(self, key) >= 1, f"optim.{key}", "an integer >= 1", getattr(self, key))


@dataclass(frozen=True)
class EvalConfig:
    """[eval]: validation during training and the final real-plugin evaluation.

    ``val_distance`` picks the number that selects the best checkpoint: ``plugin`` re-renders
    the validation predictions through the real plugin and takes the multi-resolution STFT
    distance (honest, costs a pool of renders per evaluation); ``param`` uses the parameter loss.
    The final evaluation uses ``n_random`` held-out random presets (from the test split) and
    ``n_factory`` factory presets. With ``proxy_search_rounds`` > 0 it also scores
    ``model+proxy_search``: the model's prediction improved by ``training.proxy_search`` (rounds of
    ``proxy_search_candidates`` proxy renders per target, step ``proxy_search_sigma`` in normalized
    units, halved each round; no plugin render, no training data).
    """

    n_random: int = 256
    n_factory: int = 256
    val_distance: Literal["plugin", "param"] = "plugin"
    batch_size: int = 64
    proxy_search_rounds: int = 6
    proxy_search_candidates: int = 8
    proxy_search_sigma: float = 0.25
    # model+best_of_k: the model's k candidate presets ranked by their proxy render's distance to the
    # target (k proxy renders, no plugin render); 0 skips it. These k, with the lookup's presets
    # below, are the first ranking, from whose pick model+proxy_search and model+proxy_refine start.
    best_of_k: int = 16
    # the first ranking (where model+proxy_search and model+proxy_refine start) also holds the
    # presets of the target's nearest gallery sounds (the nearest-neighbour lookup, log-mel): this
    # many, each one proxy render more
    lookup_candidates: int = 4
    # parameters each proxy_search candidate changes (about; 0: every continuous one and half the categoricals)
    proxy_search_mutations: int = 0
    # model+proxy_refine: from the first ranking's pick (model+best_of_k's candidates and the
    # lookup's presets: where model+proxy_search starts; the model's own preset when both are 0),
    # this many Adam steps through the proxy on the continuous parameters, each target keeping the
    # point of least proxy distance (steps + 1 proxy renders with gradient per target, no plugin
    # render; training.refine.ProxyRefiner.descend); 0 skips it. Its learning rate in logit space:
    proxy_refine_steps: int = 43
    proxy_refine_lr: float = 0.15

    def validate(self) -> None:
        _require(self.n_random >= 1, "eval.n_random", "an integer >= 1", self.n_random)
        _require(self.n_factory >= 0, "eval.n_factory", "an integer >= 0 (0 skips factory presets)", self.n_factory)
        _require(1 <= self.batch_size <= 65536, "eval.batch_size", "an integer in [1, 65536]", self.batch_size)
        _require(0 <= self.proxy_search_rounds <= 64, "eval.proxy_search_rounds", "an integer in [0, 64] (0 skips it)",
                 self.proxy_search_rounds)
        _require(1 <= self.proxy_search_candidates <= 4096, "eval.proxy_search_candidates", "an integer in [1, 4096]",
                 self.proxy_search_candidates)
        _require(0 <= self.proxy_search_mutations <= 4096, "eval.proxy_search_mutations",
                 "an integer >= 0 (0: every parameter)", self.proxy_search_mutations)
        _require(0 <= self.lookup_candidates <= 4096, "eval.lookup_candidates", "an integer in [0, 4096]",
                 self.lookup_candidates)
        _require(0 <= self.best_of_k <= 4096, "eval.best_of_k", "an integer in [0, 4096] (0 skips it)",
                 self.best_of_k)
        _require(0.0 < self.proxy_search_sigma <= 1.0, "eval.proxy_search_sigma", "a number in (0, 1]",
                 self.proxy_search_sigma)
        _require(0 <= self.proxy_refine_steps <= 4096, "eval.proxy_refine_steps", "an integer in [0, 4096] (0 skips it)",
                 self.proxy_refine_steps)
        _require(0.0 < self.proxy_refine_lr <= 10.0, "eval.proxy_refine_lr", "a number in (0, 10]",
                 self.proxy_refine_lr)


SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "data": DataConfig,
    "features": FeatureConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "eval": EvalConfig,
}


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_name(self) -> str:
        """``run.name``, or the synth's name when empty (``vst:PATH``: the plugin's file stem)."""
        if self.run.name:
            return self.run.name
        synth = self.data.synth
        if synth.startswith("vst:"):
            synth = Path(synth[4:].rstrip("/")).stem or "vst"
        return synth

    @property
    def run_dir(self) -> Path:
        return Path(self.run.runs_dir) / self.run_name

    @property
    def spectral_params(self) -> tuple[str, ...]:
        """``loss.spectral_params`` resolved: the synth's default when the config leaves it empty."""
        if self.loss.spectral_params:
            return self.loss.spectral_params
        from proxies.synth import get_synth  # noqa: PLC0415

        return tuple(get_synth(self.data.synth, self.data.spec or None).spectral_params) or ("all",)

    def validate(self) -> "Config":
        for name in SECTIONS:
            getattr(self, name).validate()
        d, f = self.data, self.features
        _require(f.f_max_hz <= d.sample_rate / 2, "features.f_max_hz",
                 f"a frequency <= data.sample_rate / 2 = {d.sample_rate / 2:g} Hz", f.f_max_hz)
        _require(f.n_fft <= d.n_samples, "features.n_fft",
                 f"an FFT no longer than the sound (data.n_samples = {d.n_samples})", f.n_fft)
        _require(max(self.loss.fft_sizes) <= d.n_samples, "loss.fft_sizes",
                 f"FFT sizes no longer than the sound (data.n_samples = {d.n_samples})", list(self.loss.fft_sizes))
        _require(self.eval.n_random <= d.n_test, "eval.n_random",
                 f"at most data.n_test = {d.n_test} held-out random presets", self.eval.n_random,
                 "raise data.n_test or lower eval.n_random")
        _require(self.optim.batch_size <= d.n_train, "optim.batch_size",
                 f"at most data.n_train = {d.n_train}", self.optim.batch_size)
        if self.model.kind == "rawcnn":
            _require(self.model.raw_kernel <= d.n_samples, "model.raw_kernel",
                     f"at most data.n_samples = {d.n_samples}", self.model.raw_kernel)
        _check_frozen(self.data)
        _check_spectral_params(self)
        _check_proxy_needed(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict (tuples as lists); :func:`from_dict` inverts it."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=_json_default))


# ---------------------------------------------------------------------------------------- loading
def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a TOML config (or the defaults when ``path`` is None), apply ``--set`` overrides,
    check every key, value and combination, and return the frozen :class:`Config`."""
    raw: dict[str, Any] = _read_toml(Path(path)) if path is not None else {}
    for item in overrides:
        section, key, value = parse_override(item)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"[{section}] in the config file is not a table")
        raw[section][key] = value
    return from_dict(raw)


def _read_toml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as nested dicts, with ``extends = "other.toml"`` (relative to the file)
    resolved: the other file's tables first, this file's keys on top."""
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a directory; expected a TOML file such as "
                          f"configs/amsynth.toml (e.g. {path / 'amsynth.toml'})")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; expected a TOML file such as "
                          "configs/amsynth.toml")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({e.strerror or e}); fix its permissions "
                          "or copy it somewhere readable") from None
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark (some Windows editors write one): harmless
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at line {line}); TOML files are "
                          "UTF-8: save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e}); fix the syntax at that line") from None
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends: expected a file name such as \"amsynth.toml\", got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in _seen + (path.resolve(),):
        raise ConfigError(f"{path}: extends {base!r} makes a cycle; expected a chain that ends in a file "
                          "without `extends`")
    merged = _read_toml(base_path, _seen + (path.resolve(),))
    for section, table in raw.items():
        if isinstance(table, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **table}
        else:
            merged[section] = table
    return merged


def with_defaults(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config (a run's ``config.json``, :meth:`Config.to_dict`'s layout) with every key it
    lacks at its default: a run made before a key existed did what the key's default does."""
    out: dict[str, Any] = Config().to_dict()
    for section, table in raw.items():
        out[section] = {**out.get(section, {}), **table} if isinstance(table, Mapping) else table
    return out


def from_dict(raw: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested dicts (as TOML gives them)."""
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section [{unknown[0]}]; expected one of: "
                          f"{', '.join('[' + s + ']' for s in SECTIONS)}")
    sections = {}
    for name, cls in SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"[{name}] must be a table of key = value pairs, got {type(table).__name__}")
        sections[name] = _build_section(name, cls, table)
    return Config(**sections).validate()


def parse_override(item: str) -> tuple[str, str, Any]:
    """``"section.key=value"`` -> (section, key, parsed value). The value is a TOML literal
    (numbers, booleans, strings in quotes, [lists], {inline tables}) or else a bare string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value (e.g. --set optim.lr=3e-4)")
    lhs, text = item.split("=", 1)
    parts = lhs.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {item!r}: expected section.key=value with exactly one dot on the left "
                          f"(e.g. --set optim.lr=3e-4), got {lhs.strip()!r}")
    section, key = parts
    if section not in SECTIONS:
        raise ConfigError(f"--set {item!r}: unknown section {section!r}; expected one of: {', '.join(SECTIONS)}")
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word: run.name=try2, features.kind=mfcc
    return section, key, value


def _build_section(section: str, cls: type, table: Mapping[str, Any]):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {section}.{unknown[0]}; expected one of: {', '.join(fields)}")
    values = {key: _coerce(f"{section}.{key}", hints[key], value) for key, value in table.items()}
    return cls(**values)


def _coerce(key: str, hint: Any, value: Any) -> Any:
    """Check ``value`` against the annotation ``hint``; return it in the dataclass's type."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed or type(value) is not type(allowed[0]):
            raise ConfigError(f"{key} = {value!r} is not allowed; expected one of: "
                              f"{', '.join(repr(a) for a in allowed)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r} ({type(value).__name__})")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r} ({type(value).__name__})")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r} ({type(value).__name__}); "
                              "quote it in TOML")
        return value
    if origin is tuple:
        (item_hint, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list such as [64, 128], got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", item_hint, v) for i, v in enumerate(value))
    if origin in (collections.abc.Mapping, dict):
        _key_hint, value_hint = typing.get_args(hint)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected an inline table such as {{ name = 0.5 }}, got {value!r}")
        return FrozenMap({str(k): _coerce(f"{key}.{k}", value_hint, v) for k, v in value.items()})
    raise TypeError(f"config field {key} has an unsupported annotation {hint!r}")  # a bug here, not user input


def _synth(data: DataConfig):
    from proxies.synth import get_synth  # noqa: PLC0415  (lazy: no plugin, JAX or engine is loaded)

    return get_synth(data.synth, data.spec or None)


def _check_synth(data: DataConfig) -> None:
    from proxies.synth import SynthNotFoundError  # noqa: PLC0415

    try:
        _synth(data)
    except SynthNotFoundError as e:
        raise ConfigError(f"data.synth: {e}") from None
    except (OSError, ValueError) as e:  # a vst: synth whose plugin or probed spec is missing or bad
        raise ConfigError(f"data.synth = {data.synth!r}: {e}") from None


def _check_frozen(data: DataConfig) -> None:
    spec = _synth(data).spec
    for name in data.frozen:
        if not spec.has(name):
            raise ConfigError(f"data.frozen.{name}: {data.synth} has no parameter {name!r}; expected names: "
                              f"{', '.join(spec.names)}")


def _check_proxy_needed(cfg: "Config") -> None:
    """A synth without a differentiable proxy trains with the parameter loss only."""
    synth = _synth(cfg.data)
    if synth.has_proxy:
        return
    _require(cfg.loss.schedule == "param", "loss.schedule",
             f"'param' for {synth.name}, which has no differentiable proxy (the spectral loss renders "
             "through one)", cfg.loss.schedule, 'set loss.schedule = "param"')


def _check_spectral_params(cfg: "Config") -> None:
    names = cfg.loss.spectral_params
    if names in (("all",), ()):
        return
    spec = _synth(cfg.data).spec
    learned = [p.name for p in spec.params if p.prior != "fixed" and p.name not in cfg.data.frozen]
    _require(len(names) >= 1, "loss.spectral_params", 'at least one parameter name, or ["all"]', list(names))
    for name in names:
        _require(name in learned, "loss.spectral_params", f"names of learned {cfg.data.synth} parameters "
                 f"(not fixed or frozen), or [\"all\"]; learned: {', '.join(learned)}", name)


def _check_runs_dir(runs_dir: str) -> None:
    """``run.runs_dir``: a folder of runs, never the file system's root, the home folder or the
    working directory itself (``fit --fresh`` deletes ``runs_dir/name``; a typo must not point
    it at a folder that holds other things)."""
    import os  # noqa: PLC0415

    expected = "a folder that holds runs, such as \"runs\" (not empty, '.', '/' or the home folder)"
    fix = "set run.runs_dir = \"runs\" (or another folder of its own)"
    _require(isinstance(runs_dir, str) and runs_dir.strip() != "" and "\0" not in runs_dir, "run.runs_dir",
             expected, runs_dir, fix)
    p = Path(runs_dir).expanduser()
    try:
        resolved = p.resolve()
        cwd = Path.cwd().resolve()
    except (OSError, RuntimeError):
        return  # an unresolvable path is refused where it is created, with its own message
    home = Path(os.path.expanduser("~")).resolve()
    _require(resolved != Path(resolved.anchor), "run.runs_dir", expected, runs_dir, fix)
    _require((p.is_absolute() or resolved != cwd) and resolved != home, "run.runs_dir", expected,
             f"{runs_dir} (= {resolved}, the {'working' if resolved == cwd else 'home'} folder)", fix)


def _require(ok: bool, key: str, expected: str, got: Any, fix: str = "") -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {got!r}" + (f"; {fix}" if fix else ""))


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def _json_default(o: Any) -> Any:
    if isinstance(o, Mapping):
        return dict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
