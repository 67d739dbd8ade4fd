"""Reports of sound matching and evaluation: figures, Markdown and self-contained HTML.

* :func:`spectrogram_png`: log-mel spectrograms of several sounds stacked in one PNG (bytes).
* :func:`wav_bytes`: a 16-bit PCM wav in memory (for ``data:`` URIs).
* :func:`write_markdown` / :func:`write_html`: the evaluation report of
  ``training.evaluate`` from its result dict (the JSON it writes) plus optional examples.

The HTML page has no external resource: figures are embedded base64 PNGs, audio players
embedded base64 wavs, styles inline.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

#: Metric keys in report order: (key, column title, lower is better).
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("mss", "MSS", True),
    ("logmel_l1", "log-mel L1 (dB)", True),
    ("mfcc_l1", "MFCC L1", True),
    ("lsd_db", "LSD (dB)", True),
    ("spectral_convergence", "SC", True),
    ("param_mae", "param MAE", True),
    ("cat_acc", "cat. acc.", False),
)


# ------------------------------------------------------------------------------ figures
def _log_mel_db(mono: np.ndarray, sample_rate: int, n_mels: int = 96) -> np.ndarray:
    import librosa

    n_fft = 1024 if sample_rate <= 24000 else 2048
    s = librosa.feature.melspectrogram(y=np.asarray(mono, np.float32), sr=sample_rate, n_fft=n_fft,
                                       hop_length=n_fft // 4, n_mels=n_mels, fmax=sample_rate / 2)
    return librosa.power_to_db(s, ref=1.0, amin=1e-10, top_db=None)


def spectrogram_png(rows: Sequence[tuple[str, np.ndarray]], sample_rate: int, title: str | None = None,
                    floor_db: float = -100.0) -> bytes:
    """A PNG (bytes) with one log-mel spectrogram per row.

    Args:
        rows: ``(label, audio)`` pairs; audio is ``[T]`` or ``[channels, T]`` (mixed to mono).
        sample_rate: Hz, shared by all rows.
        title: optional figure title.
        floor_db: colour scale floor (dB re full scale); the ceiling is the loudest row's maximum.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = []
    for label, audio in rows:
        a = np.asarray(audio, np.float64)
        mono = a.mean(axis=0) if a.ndim == 2 else a
        specs.append((label, _log_mel_db(np.nan_to_num(mono), sample_rate)))
    vmax = max(float(s.max()) for _, s in specs) if specs else 0.0
    vmin = max(floor_db, vmax - 100.0)
    fig, axes = plt.subplots(len(specs), 1, figsize=(6.4, 1.45 * len(specs) + 0.6), squeeze=False, sharex=True,
                             layout="constrained")
    for ax, (label, s) in zip(axes[:, 0], specs):
        dur = (s.shape[1] - 1) * (256 if sample_rate <= 24000 else 512) / sample_rate
        im = ax.imshow(s, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                       extent=(0.0, max(dur, 1e-3), 0, s.shape[0]))
        ax.set_ylabel("mel", fontsize=7)
        ax.set_title(label, fontsize=8, loc="left")
        ax.tick_params(labelsize=6)
    axes[-1, 0].set_xlabel("time (s)", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    cbar = fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.8, pad=0.01)
    cbar.ax.tick_params(labelsize=6)
    cbar.set_label("dB", fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def audio_player(label: str, src: str | None) -> str:
    """A captioned audio player for ``src`` (a URL or a ``data:`` URI; None: a dash)."""
    body = f"<audio controls preload='none' src='{_e(src)}'></audio>" if src else "<span class='nogain'>–</span>"
    return f"<figure><figcaption>{_e(label)}</figcaption>{body}</figure>"


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM wav bytes of ``audio`` [channels, T] or [T] (clipped to [-1, 1])."""
    import soundfile as sf

    a = np.asarray(audio, np.float64)
    a = a.T if a.ndim == 2 else a
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.nan_to_num(a), -1.0, 1.0), int(sample_rate), subtype="PCM_16", format="WAV")
    return buf.getvalue()


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# ------------------------------------------------------------------------------ examples
@dataclass
class Example:
    """One target of an evaluation shown in the report: its audio and each method's plugin render."""

    name: str
    sample_rate: int
    target: np.ndarray  # [2, T]
    renders: dict[str, np.ndarray] = field(default_factory=dict)  # method -> [2, T]
    mss: dict[str, float] = field(default_factory=dict)  # method -> distance


# ------------------------------------------------------------------------------ text helpers
def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{digits}g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(v)


def _seconds(v: Any) -> str:
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–"
    return f"{v:.3g} s" if v < 100 else f"{v:.0f} s"


def method_rows(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, column keys) of the main table: one row per method, its mean metrics, median
    MSS, plugin renders and wall time per target."""
    methods: Mapping[str, Any] = result["methods"]
    keys = [k for k, _, _ in METRICS if any(k in m.get("metrics", {}) for m in methods.values())]
    header = ["method"] + [t for k, t, _ in METRICS if k in keys] + ["median MSS", "renders / target",
                                                                    "wall time / target", "n"]
    rows = []
    for name, m in methods.items():
        met = m.get("metrics", {})
        rows.append([name] + [_fmt(met.get(k)) for k in keys] + [
            _fmt(m.get("median_mss")), _fmt(m.get("renders_per_target")), _seconds(m.get("seconds_per_target")),
            f"{m.get('n_ok', 0)}" + (f" ({m['n_failed']} failed)" if m.get("n_failed") else "")])
    return header, rows, keys


def _best_in_column(result: Mapping[str, Any], keys: Sequence[str]) -> dict[str, str]:
    """metric key -> name of the best method."""
    lower = {k: lo for k, _, lo in METRICS}
    best = {}
    for k in keys:
        vals = {n: m["metrics"][k] for n, m in result["methods"].items()
                if k in m.get("metrics", {}) and m["metrics"][k] is not None and math.isfinite(m["metrics"][k])}
        if vals:
            best[k] = (min if lower[k] else max)(vals, key=vals.get)
    return best


def _bar_lines(result: Mapping[str, Any]) -> list[str]:
    out = []
    for bar in result.get("bars", []):
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[bar.get("passed")]
        out.append(f"**{verdict}**: {bar['name']}. {bar.get('detail', '')}")
    return out


def curve_rows(result: Mapping[str, Any]) -> list[list[str]]:
    """Rows (steps, mean MSS so far, seconds per target) of model+refine's snapshots, if recorded."""
    curve = result.get("methods", {}).get("model+refine", {}).get("curve")
    if not curve:
        return []
    return [[str(s), _fmt(m), _seconds(t)] for s, m, t in zip(curve["steps"], curve["mean_mss"],
                                                               curve["seconds_per_target"])]


_CURVE_HEADER = ["proxy steps", "mean MSS (best so far, plugin)", "wall time / target"]


def _settings_lines(result: Mapping[str, Any]) -> list[str]:
    s = result.get("settings", {})
    return [f"{k}: {v}" for k, v in s.items()]


# ------------------------------------------------------------------------------ Markdown
def markdown(result: Mapping[str, Any], figures: Mapping[str, str] | None = None) -> str:
    """The Markdown report of an evaluation result (``figures``: example name -> relative PNG path)."""
    header, rows, keys = method_rows(result)
    best = _best_in_column(result, keys)
    lines = [f"# Sound matching evaluation: {result['run']} on {result['targets']} targets", ""]
    lines += [f"{result.get('description', '')}", ""]
    lines += ["All scores compare the target with the **real plugin's re-render** of each method's preset "
              "(lower is better except categorical accuracy; best in bold). Wall time per target: producing "
              "the preset, including the plugin renders a method itself uses to choose (search, refinement "
              "candidates); the final scoring render is not counted. Batched stages report their batch's "
              "wall time divided by the number of targets.", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for r in rows:
        cells = list(r)
        for j, k in enumerate(keys):
            if best.get(k) == r[0]:
                cells[j + 1] = f"**{cells[j + 1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    descr = {n: m.get("description", "") for n, m in result["methods"].items()}
    lines += ["Methods:", ""] + [f"- `{n}`: {d}" for n, d in descr.items()] + [""]
    bars = _bar_lines(result)
    if bars:
        lines += ["## Bars", ""] + [f"- {b}" for b in bars] + [""]
    curve = curve_rows(result)
    if curve:
        lines += ["## Refinement curve", "", "model+refine's snapshots, each re-rendered by the plugin "
                  "(step 0 = the model's prediction).", "", "| " + " | ".join(_CURVE_HEADER) + " |",
                  "|---:|---:|---:|"] + ["| " + " | ".join(r) + " |" for r in curve] + [""]
    notes = result.get("notes", [])
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    per = result.get("per_target", [])
    if per:
        names = list(result["methods"])
        lines += ["## Per target (MSS)", "", "| target | note | " + " | ".join(names) + " |",
                  "|---|---:|" + "|".join(["---:"] * len(names)) + "|"]
        for t in per:
            lines.append(f"| {t['name']} | {t.get('note', '')} | " +
                         " | ".join(_fmt(t.get("mss", {}).get(n)) for n in names) + " |")
        lines.append("")
    if figures:
        lines += ["## Examples", ""]
        for name, path in figures.items():
            lines += [f"![{name}]({path})", ""]
    lines += ["## Settings", ""] + [f"- {s}" for s in _settings_lines(result)] + [""]
    return "\n".join(lines)


def write_markdown(result: Mapping[str, Any], path: str | Path, figures: Mapping[str, str] | None = None) -> Path:
    path = Path(path)
    path.write_text(markdown(result, figures))
    return path


# ------------------------------------------------------------------------------ HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.4}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f2f2f2}
td.best{font-weight:bold;background:#e8f5e9}
.example{border-top:1px solid #ddd;margin-top:1.5em;padding-top:0.5em}
.players{display:flex;flex-wrap:wrap;gap:0.8em}
.players figure{margin:0}
.players figcaption{font-size:0.8em}
.pass{color:#1b5e20;font-weight:bold}.fail{color:#b71c1c;font-weight:bold}.na{color:#777;font-weight:bold}
code{background:#f5f5f5;padding:0 0.2em}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def html_report(result: Mapping[str, Any], examples: Sequence[Example] = (), audio_examples: int = 3) -> str:
    """The self-contained HTML report: tables, example spectrograms (base64 PNG) and audio
    players (base64 wav) for the first ``audio_examples`` examples."""
    header, rows, keys = method_rows(result)
    best = _best_in_column(result, keys)
    out = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
           f"<title>Evaluation: {_e(result['run'])} on {_e(result['targets'])}</title>",
           f"<style>{_CSS}</style></head><body>",
           f"<h1>Sound matching evaluation: <code>{_e(result['run'])}</code> on {_e(result['targets'])} targets</h1>",
           f"<p>{_e(result.get('description', ''))}</p>",
           "<p>All scores compare the target with the <b>real plugin's re-render</b> of each method's preset "
           "(lower is better except categorical accuracy; best in bold). Wall time per target covers producing "
           "the preset, including the plugin renders a method uses to choose; batched stages report their "
           "batch's wall time divided by the number of targets.</p>",
           "<h2>Methods</h2>", "<table id='methods'><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header)
           + "</tr></thead><tbody>"]
    for r in rows:
        cells = [f"<td>{_e(r[0])}</td>"]
        for j, c in enumerate(r[1:]):
            k = keys[j] if j < len(keys) else None
            cls = " class='best'" if k is not None and best.get(k) == r[0] else ""
            cells.append(f"<td{cls}>{_e(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    out.append("<ul>" + "".join(f"<li><code>{_e(n)}</code>: {_e(m.get('description', ''))}</li>"
                                 for n, m in result["methods"].items()) + "</ul>")
    bars = result.get("bars", [])
    if bars:
        out.append("<h2>Bars</h2><ul id='bars'>")
        for bar in bars:
            p = bar.get("passed")
            cls, word = {True: ("pass", "PASS"), False: ("fail", "FAIL"), None: ("na", "n/a")}[p]
            out.append(f"<li><span class='{cls}'>{word}</span> {_e(bar['name'])}. {_e(bar.get('detail', ''))}</li>")
        out.append("</ul>")
    curve = curve_rows(result)
    if curve:
        out.append("<h2>Refinement curve</h2><p>model+refine's snapshots, each re-rendered by the plugin (step 0 = "
                   "the model's prediction).</p><table id='refine-curve'><thead><tr>"
                   + "".join(f"<th>{_e(h)}</th>" for h in _CURVE_HEADER) + "</tr></thead><tbody>"
                   + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in curve)
                   + "</tbody></table>")
    notes = result.get("notes", [])
    if notes:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    per = result.get("per_target", [])
    if per:
        names = list(result["methods"])
        out.append("<h2>Per target (MSS)</h2><table id='per-target'><thead><tr><th>target</th><th>note</th>"
                   + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr></thead><tbody>")
        for t in per:
            vals = {n: t.get("mss", {}).get(n) for n in names}
            finite = {n: v for n, v in vals.items() if v is not None and math.isfinite(v)}
            win = min(finite, key=finite.get) if finite else None
            out.append(f"<tr><td>{_e(t['name'])}</td><td>{_e(t.get('note', ''))}</td>" + "".join(
                f"<td{' class=best' if n == win else ''}>{_e(_fmt(vals[n]))}</td>" for n in names) + "</tr>")
        out.append("</tbody></table>")
    if examples:
        out.append("<h2>Examples</h2>")
        for k, ex in enumerate(examples):
            rows_fig = [("target", ex.target)] + [
                (f"{m} (MSS {_fmt(ex.mss.get(m))})", a) for m, a in ex.renders.items()]
            png = spectrogram_png(rows_fig, ex.sample_rate, title=ex.name)
            out.append(f"<div class='example'><h3>{_e(ex.name)}</h3>"
                       f"<img alt='log-mel spectrograms of {_e(ex.name)}' src='{data_uri(png, 'image/png')}'>")
            if k < audio_examples:
                out.append("<div class='players'>")
                for label, a in [("target", ex.target)] + list(ex.renders.items()):
                    out.append(audio_player(label, data_uri(wav_bytes(a, ex.sample_rate), "audio/wav")))
                out.append("</div>")
            out.append("</div>")
    settings = _settings_lines(result)
    if settings:
        out.append("<h2>Settings</h2><ul>" + "".join(f"<li>{_e(s)}</li>" for s in settings) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out)


def write_html(result: Mapping[str, Any], path: str | Path, examples: Sequence[Example] = (),
               audio_examples: int = 3) -> Path:
    path = Path(path)
    path.write_text(html_report(result, examples, audio_examples))
    return path
