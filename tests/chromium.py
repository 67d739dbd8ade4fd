"""Headless Chromium for the HTML tests (the match report, the folder gallery): one command line,
and a probe script that makes the dumped DOM say whether images and audio could be decoded."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# Appended to a copy of a page: after load, each image records its decoded width and each audio
# element its decoded duration (or its error code).
PROBE = """<script>
window.addEventListener('load', () => {
  document.querySelectorAll('img').forEach(i => i.setAttribute('data-natural-width', i.naturalWidth));
  document.querySelectorAll('audio').forEach(a => {
    a.addEventListener('loadedmetadata', () => a.setAttribute('data-duration', a.duration));
    a.addEventListener('error', () => a.setAttribute('data-error', a.error ? a.error.code : 'x'));
    a.preload = 'metadata'; a.load();
  });
});
</script>"""


def run_chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Headless Chromium with ``args`` (e.g. ``--dump-dom URL``, ``--screenshot=...``), offline and
    with a throwaway profile; fails the test with the install line if Chromium is missing."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: install Debian's chromium (apt-get install chromium)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", "--autoplay-policy=no-user-gesture-required",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000"] + args
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def dump_probed_dom(page: Path, tmp_path: Path, tries: int = 4) -> str:
    """The DOM of ``page`` (a copy with :data:`PROBE` appended) after load. Chromium's virtual time
    does not wait for media decoding, so an audio element may not have reported yet (neither
    ``data-duration`` nor ``data-error``): then it is loaded again, up to ``tries`` times, and the
    last DOM is returned as it is (the caller's assertions then fail on the missing figure)."""
    import re

    dom = ""
    for _ in range(tries):
        dom = run_chromium(["--dump-dom", page.resolve().as_uri()], tmp_path).stdout
        audios = re.findall(r"<audio\b[^>]*>", dom)
        if all("data-duration=" in a or "data-error=" in a for a in audios):
            break
    return dom
