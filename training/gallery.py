"""Matching a whole folder of sounds: which files to match, which are done, and the gallery page.

    python -m training.match DIR --out OUTDIR

For each audio file ``DIR/sub/name.ext`` (recursively; suffixes of
:data:`training.targets.AUDIO_SUFFIXES`; hidden files and folders skipped) the match writes
``OUTDIR/sub/name<preset suffix>`` and its companions ``name.wav`` (the synth's render),
``name.png`` (spectrograms) and ``name.json`` (the match report).

* :func:`plan_folder`: one :class:`FolderItem` per input file, in sorted order, with whether its
  match is already complete (so an interrupted folder resumes where it stopped);
* :func:`record_failure`: the report of a sound that could not be matched (``{"error": ...}``);
* :func:`summarise_folder`: counts and medians, for the page and the command's closing line;
* :func:`write_gallery`: ``OUTDIR/index.html``, one row per sound: players, spectrograms,
  distances, what each stage bought, a download link for the preset. The page links to the
  files beside it by relative path and embeds nothing else external.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import urllib.parse
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

from training.cli import _err
from training.report import _CSS, _e, _fmt, _seconds, audio_player, wav_bytes
from training.targets import AUDIO_SUFFIXES

#: the page written into the output folder
INDEX_NAME = "index.html"
#: targets of these suffixes are linked from the page (browsers play them); others get a preview
BROWSER_AUDIO = (".wav", ".flac", ".ogg", ".oga", ".mp3")
#: a target's preview (a format browsers do not play, or no relative path): a 16-bit wav of at most
#: this length beside the preset, ``NAME.target.wav``, written once
PREVIEW_MAX_S = 10.0
PREVIEW_SUFFIX = ".target.wav"


class FolderItem(NamedTuple):
    """One input file of a folder match.

    Attributes:
        source: the input audio file.
        preset: the preset the match writes (``OUTDIR/sub/name<preset suffix>``).
        report: the match report beside it (``name.json``).
        done: the report parses, holds no ``error``, and the preset and ``name.wav`` exist.
        error: the message of a failed match (its report's ``error``), else None.
        parsed: the report of a done or failed item as read when the item was made (else None),
            so a page or a summary does not read it again.
    """

    source: Path
    preset: Path
    report: Path
    done: bool
    error: str | None = None
    parsed: Mapping[str, Any] | None = None

    @property
    def wav(self) -> Path:
        return self.preset.with_suffix(".wav")

    @property
    def png(self) -> Path:
        return self.preset.with_suffix(".png")


# ------------------------------------------------------------------------------ planning
def _inside(p: Path, folder: Path) -> bool:
    return p == folder or folder in p.parents


def _audio_files(in_dir: Path, skip: Path | None) -> list[Path]:
    """Audio files under ``in_dir`` (sorted by relative path), hidden ones and ``skip``'s subtree left out."""
    found = []
    for root, dirs, files in os.walk(in_dir):
        r = Path(root)
        dirs[:] = [d for d in dirs if not d.startswith(".") and (skip is None or (r / d).resolve() != skip)]
        for f in files:
            p = r / f
            if not f.startswith(".") and Path(f).suffix.lower() in AUDIO_SUFFIXES and p.is_file():
                found.append(p)
    return sorted(found, key=lambda p: p.relative_to(in_dir).parts)


def _read_report(path: Path) -> dict | None:
    """The report as a dict; None when missing, unreadable, truncated or not a JSON object."""
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _error_of(report: Mapping[str, Any] | None) -> str | None:
    if report is None or report.get("error") is None:
        return None
    return str(report["error"])


def item_status(source: Path, preset: Path) -> FolderItem:
    """The :class:`FolderItem` of one source and its preset path, as the files on disk say now."""
    report_path = preset.with_suffix(".json")
    rep = _read_report(report_path)
    error = _error_of(rep)
    done = rep is not None and error is None and preset.is_file() and preset.with_suffix(".wav").is_file()
    return FolderItem(source, preset, report_path, done, error, rep if done or error is not None else None)


def plan_folder(in_dir: str | os.PathLike, out_dir: str | os.PathLike, preset_suffix: str) -> list[FolderItem]:
    """One item per audio file under ``in_dir``, sorted by relative path.

    Args:
        in_dir: the folder of target sounds (searched recursively).
        out_dir: where the presets go, mirroring ``in_dir``'s subfolders. It may lie inside
            ``in_dir`` (its subtree is then not searched, so earlier renders are not taken for
            targets) but must not be ``in_dir`` itself, and no output may land inside ``in_dir``.
        preset_suffix: the synth's preset suffix, e.g. ``.amSynth``.

    Raises:
        training.cli.MatchError: a missing folder, a folder with no audio file, two inputs that
            would write the same preset (``kick.wav`` and ``kick.flac``), outputs that would land
            among the inputs.
    """
    src, out = Path(in_dir), Path(out_dir)
    if not preset_suffix.startswith(".") or len(preset_suffix) < 2:
        raise _err("preset_suffix", "a file suffix such as '.amSynth'", repr(preset_suffix),
                   "pass the synth's presets.write_suffix")
    if not src.is_dir():
        what = "which does not exist" if not src.exists() else "which is not a folder"
        raise _err("target folder", "a folder of audio files", f"{str(src)!r}, {what}", "check the path")
    if out.exists() and not out.is_dir():
        raise _err("--out", "a folder (for a folder of targets)", f"{str(out)!r}, an existing file",
                   "name a new or existing folder, e.g. --out matches/")
    src_r, out_r = src.resolve(), out.resolve()
    if out_r == src_r:
        raise _err("--out", "a folder other than the target folder", f"{str(out)!r}, the target folder itself",
                   f"e.g. --out {src / 'matches'} (the renders would otherwise overwrite or join the targets)")
    skip = out_r if src_r in out_r.parents else None
    files = _audio_files(src, skip)
    if not files:
        raise _err("target folder", f"a folder holding audio files ({', '.join(AUDIO_SUFFIXES)}), searched "
                   "recursively, hidden files skipped", f"{str(src)!r}, which holds none",
                   "point at the folder of sounds, or convert the files to wav/flac")
    items, seen = [], {}
    for f in files:
        rel = f.relative_to(src)
        preset = out / rel.parent / (rel.stem + preset_suffix)
        key = preset.resolve()
        if key in seen:
            raise _err("target folder", "one audio file per name in each folder (each is matched to "
                       f"name{preset_suffix})", f"{str(seen[key])!r} and {str(f)!r}, both matched to {str(preset)!r}",
                       "rename or move one of them")
        seen[key] = f
        if _inside(key, src_r) and not (skip is not None and _inside(key, skip)):
            raise _err("--out", "a folder whose outputs do not land among the targets",
                       f"{str(out)!r}: {str(f)!r} would be matched to {str(preset)!r}, inside the target folder",
                       "choose an --out folder outside the target folder, or a subfolder of it")
        items.append(item_status(f, preset))
    return items


def record_failure(item: FolderItem, error: str) -> FolderItem:
    """Write ``item``'s report as a failure (``{"target": {"path"}, "error"}``, atomically) and
    return the item as :func:`plan_folder` would now see it (not done; a rerun tries it again)."""
    from proxies.files import atomic_write_json

    report = {"target": {"path": str(item.source)}, "error": str(error)}
    item.report.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(item.report, report)
    return item._replace(done=False, error=str(error), parsed=report)


# ------------------------------------------------------------------------------ summary
def _metrics_of(block: Any) -> Mapping[str, Any]:
    """A report's metrics: ``{"metrics": {...}}`` (training.match) or the flat dict itself."""
    if not isinstance(block, Mapping):
        return {}
    m = block.get("metrics", block)
    return m if isinstance(m, Mapping) else {}


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _report_of(item: FolderItem) -> Mapping[str, Any] | None:
    """The item's report: as parsed when the item was made, else read now."""
    return item.parsed if item.parsed is not None else _read_report(item.report)


def summarise_folder(items: Sequence[FolderItem]) -> dict[str, Any]:
    """``{"n", "done", "failed", "pending", "median_mss", "median_seconds"}`` of a folder match:
    medians over the done items (final MSS of the plugin render; ``timing.total_s``), None when
    there are none."""
    reports = [_report_of(it) for it in items if it.done]
    return {
        "n": len(items),
        "done": sum(it.done for it in items),
        "failed": sum(it.error is not None for it in items),
        "pending": sum(not it.done and it.error is None for it in items),
        "median_mss": _median([_number(_metrics_of(r.get("final")).get("mss")) for r in reports if r]),
        "median_seconds": _median([_total_s(r) for r in reports if r]),
    }


def summary_line(summary: Mapping[str, Any]) -> str:
    """One line for a terminal, e.g. ``12 sounds: 10 matched, 1 failed, 1 pending; median MSS 0.84, 41 s/sound``."""
    s = summary
    return (f"{s['n']} sound{'s' if s['n'] != 1 else ''}: {s['done']} matched, {s['failed']} failed, "
            f"{s['pending']} pending; median MSS {_fmt(s['median_mss'])}, {_seconds(s['median_seconds'])} per sound")


# ------------------------------------------------------------------------------ page
_GALLERY_CSS = """
body{max-width:1500px;padding:0 1em}
#sounds th{text-align:left;vertical-align:bottom}
#sounds td{vertical-align:top;text-align:left}
#sounds td.num{text-align:right;white-space:nowrap}
#sounds td.name{max-width:16em;overflow-wrap:anywhere}
#sounds audio{width:260px;display:block}
#sounds figure{margin:0 0 0.4em 0}
#sounds figcaption{font-size:0.8em;color:#555}
#sounds img{width:380px;height:auto;display:block}
ul.stages{margin:0;padding-left:1em;font-size:0.85em}
.gain{color:#1b5e20}.nogain{color:#777}
.status{font-size:0.8em;font-weight:bold;text-transform:uppercase}
.status.done{color:#1b5e20}.status.failed{color:#b71c1c}.status.pending{color:#777}
.error{color:#b71c1c;font-size:0.85em;overflow-wrap:anywhere}
dl.summary{display:grid;grid-template-columns:max-content auto;gap:0.1em 1em}
dl.summary dt{font-weight:bold}dl.summary dd{margin:0}
"""


def _href(path: Path, out_dir: Path) -> str | None:
    """``path`` relative to ``out_dir``, URL-quoted (HTML-escape it too); None where there is no
    relative path (another drive)."""
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))
    except ValueError:
        return None
    return urllib.parse.quote(rel.replace(os.sep, "/"), safe="/")


def _preview(item: FolderItem) -> Path:
    return item.preset.with_suffix(PREVIEW_SUFFIX)


def _needs_preview(item: FolderItem, out_dir: Path) -> bool:
    return item.source.suffix.lower() not in BROWSER_AUDIO or _href(item.source, out_dir) is None


def _write_preview(item: FolderItem) -> None:
    """``NAME.target.wav``: a 16-bit wav of the first :data:`PREVIEW_MAX_S` seconds of the target,
    unless one newer than the target is there; none for an unreadable target (the match says why)."""
    import soundfile as sf

    from proxies.files import atomic_write_bytes

    path = _preview(item)
    try:
        if path.is_file() and path.stat().st_mtime_ns >= item.source.stat().st_mtime_ns:
            return
        with sf.SoundFile(str(item.source)) as f:
            audio = f.read(frames=int(PREVIEW_MAX_S * f.samplerate), dtype="float32", always_2d=True)
            sr = f.samplerate
    except Exception:  # noqa: BLE001  (a file the match refused: the page just has no player)
        return
    if audio.shape[0]:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, wav_bytes(audio.T[:2], sr))


def _target_src(item: FolderItem, out_dir: Path) -> str | None:
    if not _needs_preview(item, out_dir):
        return _href(item.source, out_dir)
    return _href(_preview(item), out_dir) if _preview(item).is_file() else None


def stage_lines(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each stage of a report with what it bought: ``{"name", "before", "after", "seconds",
    "renders", "improved"}`` (``before``: the previous stage's MSS; None for the first)."""
    out, before = [], None
    for s in report.get("stages") or []:
        if not isinstance(s, Mapping):
            continue
        after = _number(_metrics_of(s).get("mss"))
        out.append({"name": str(s.get("name", "?")), "before": before, "after": after,
                    "seconds": _number(s.get("seconds")), "renders": s.get("renders"),
                    "improved": bool(s.get("improved"))})
        before = after
    return out


def _stages_html(report: Mapping[str, Any]) -> str:
    items = []
    for st in stage_lines(report):
        b, a = st["before"], st["after"]
        if b is None:
            dist = f"MSS {_e(_fmt(a))}"
        else:
            gain = b - a if a is not None else None
            cls = "gain" if gain is not None and gain > 0 else "nogain"
            bought = f"−{_fmt(gain)}" if gain is not None and gain > 0 else "nothing kept"
            dist = f"{_e(_fmt(b))} → {_e(_fmt(a))} <span class='{cls}'>({_e(bought)})</span>"
        n = st["renders"]
        renders = f", {_e(n)} render{'s' if n != 1 else ''}" if n is not None else ""
        items.append(f"<li><b>{_e(st['name'])}</b>: {dist}, {_e(_seconds(st['seconds']))}{renders}</li>")
    return "<ul class='stages'>" + "".join(items) + "</ul>" if items else "–"


def _total_s(rep: Mapping[str, Any] | None) -> float | None:
    timing = (rep or {}).get("timing")
    return _number(timing.get("total_s")) if isinstance(timing, Mapping) else None


def _row(k: int, item: FolderItem, out_dir: Path, in_dir: Path) -> str:
    name = _display_name(item, in_dir)
    rep = _report_of(item) if (item.done or item.error) else None
    status = "done" if item.done else "failed" if item.error is not None else "pending"
    cells = [f"<td class='name'>{_e(name)}<br><span class='status {status}'>{status}</span>"]
    if item.done:
        href = _href(item.preset, out_dir)
        links = [f"<a href='{_e(href)}' download>{_e(item.preset.name)}</a>"] if href else []
        for extra in _companion_files(rep, item):
            h = _href(extra, out_dir)
            if h:
                links.append(f"<a href='{_e(h)}' download>{_e(extra.name)}</a>")
        cells[0] += "<br>" + "<br>".join(links)
    if item.error is not None:
        cells[0] += f"<div class='error'>{_e(item.error)}</div>"
    cells[0] += "</td>"
    fin = _metrics_of(rep.get("final")) if rep else {}
    note = rep.get("note") if rep else None
    cells += [f"<td class='num'>{_e(_fmt(note))}</td>", f"<td class='num'>{_e(_fmt(_number(fin.get('mss'))))}</td>",
              f"<td class='num'>{_e(_fmt(_number(fin.get('logmel_l1'))))}</td>",
              f"<td class='num'>{_e(_seconds(_total_s(rep)))}</td>",
              f"<td>{_stages_html(rep) if item.done and rep else '–'}</td>"]
    players = audio_player("target", _target_src(item, out_dir))
    if item.done:
        players += audio_player("match (synth render)", _href(item.wav, out_dir))
    cells.append(f"<td>{players}</td>")
    if item.done and item.png.is_file() and (h := _href(item.png, out_dir)):
        cells.append(f"<td><a href='{_e(h)}'><img loading='lazy' src='{_e(h)}' "
                     f"alt='log-mel spectrograms of {_e(name)}'></a></td>")
    else:
        cells.append("<td>–</td>")
    return f"<tr id='s{k}'>" + "".join(cells) + "</tr>"


def _companion_files(rep: Mapping[str, Any] | None, item: FolderItem) -> list[Path]:
    """Other preset files the match wrote (e.g. a ``.fxp``): the report's ``files`` that are
    neither the preset nor the wav/png/json, looked up beside the preset."""
    files = (rep or {}).get("files")
    if not isinstance(files, Mapping):
        return []
    out = []
    for key, v in files.items():
        if key in ("preset", "wav", "png", "json") or not isinstance(v, str):
            continue
        p = item.preset.parent / Path(v).name
        if p != item.preset and p.is_file():
            out.append(p)
    return out


def _display_name(item: FolderItem, in_dir: Path) -> str:
    try:
        return item.source.relative_to(in_dir).as_posix()
    except ValueError:
        return item.source.name


def gallery_html(out_dir: str | os.PathLike, items: Sequence[FolderItem], title: str, synth_name: str,
                 in_dir: str | os.PathLike) -> str:
    """The page :func:`write_gallery` writes (links relative to ``out_dir``; sounds named by their
    path relative to ``in_dir``, the folder of targets)."""
    out = Path(out_dir)
    root = Path(in_dir)
    s = summarise_folder(items)
    failed = [(k, it) for k, it in enumerate(items) if it.error is not None]
    page = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>{_e(title)}</title>", f"<style>{_CSS}{_GALLERY_CSS}</style></head><body>",
            f"<h1>{_e(title)}</h1>",
            f"<p>Each sound is matched with one {_e(synth_name)} preset; distances compare the target with the "
            "<b>real synth's render</b> of the written preset (lower is better). Stages list the MSS before and "
            "after each one and its wall time; a stage whose candidates did not beat the best so far keeps it.</p>",
            "<dl class='summary' id='summary'>",
            f"<dt>sounds</dt><dd>{s['n']}</dd>",
            f"<dt>matched</dt><dd>{s['done']}</dd>",
            f"<dt>failed</dt><dd>{s['failed']}</dd>",
            f"<dt>pending</dt><dd>{s['pending']}</dd>",
            f"<dt>median MSS</dt><dd>{_e(_fmt(s['median_mss']))}</dd>",
            f"<dt>median time per sound</dt><dd>{_e(_seconds(s['median_seconds']))}</dd>",
            "</dl>"]
    if failed:
        page.append("<h2>Failures</h2><ul id='failures'>" + "".join(
            f"<li><a href='#s{k}'>{_e(_display_name(it, root))}</a>: <span class='error'>{_e(it.error)}</span></li>"
            for k, it in failed) + "</ul>")
    page.append("<h2>Sounds</h2><table id='sounds'><thead><tr>" + "".join(
        f"<th>{h}</th>" for h in ("sound", "note", "MSS", "log-mel L1 (dB)", "time", "stages: MSS before → after",
                                  "listen", "spectrograms")) + "</tr></thead><tbody>")
    page += [_row(k, it, out, root) for k, it in enumerate(items)]
    page.append("</tbody></table></body></html>")
    return "\n".join(page)


def write_gallery(out_dir: str | os.PathLike, items: Sequence[FolderItem], title: str, synth_name: str,
                  in_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/index.html`` (atomically: a browser never sees half a page) and return its path.

    Every item is one row: done (distances, stages, players for the target and the match,
    spectrograms, the preset to download), failed (its error) or pending. The target is
    linked by relative path when browsers play its format, else by its preview (a 16-bit wav
    of its first :data:`PREVIEW_MAX_S` seconds beside the preset, written once). Call it again
    after each sound to keep the page current.
    """
    from proxies.files import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for item in items:
        if _needs_preview(item, out):
            _write_preview(item)
    path = out / INDEX_NAME
    atomic_write_bytes(path, gallery_html(out, items, title, synth_name, in_dir).encode("utf-8"))
    return path
