#!/usr/bin/env bash
# One-time, idempotent setup: Debian packages (amsynth; hexter's DX7 voices; dpf-plugins-vst's
# Nekobi and Kars; sonic-pi-samples' CC0 recordings for training/recordings.py) and the Python
# environment in .venv/.
# Re-running skips whatever is already in place. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

AMSYNTH_VST=/usr/lib/vst/amsynth_vst.so
HEXTER_VOICES=/usr/share/hexter/dx7_roms.dx7
NEKOBI_VST=/usr/lib/vst/Nekobi-vst.so
SONIC_PI_SAMPLE=/usr/share/sonic-pi/samples/guit_harmonics.flac
APT_PACKAGES=(amsynth hexter dpf-plugins-vst sonic-pi-samples)
# python3-venv provides ensurepip on Debian; chromium renders the HTML report in a test.
python3 -c 'import ensurepip' 2>/dev/null || APT_PACKAGES+=(python3-venv)
command -v chromium >/dev/null 2>&1 || APT_PACKAGES+=(chromium)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  case "$p" in
    amsynth) [ -f "$AMSYNTH_VST" ] || missing+=(amsynth) ;;
    hexter) [ -f "$HEXTER_VOICES" ] || missing+=(hexter) ;;
    dpf-plugins-vst) [ -f "$NEKOBI_VST" ] || missing+=(dpf-plugins-vst) ;;
    sonic-pi-samples) [ -f "$SONIC_PI_SAMPLE" ] || missing+=(sonic-pi-samples) ;;
    *) missing+=("$p") ;;
  esac
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "[setup] installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    echo "[setup] installing Debian packages with sudo: ${missing[*]}"
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "[setup] missing Debian packages: ${missing[*]}" >&2
    echo "[setup] run:  sudo apt-get install ${missing[*]}   then re-run: bash scripts/setup.sh" >&2
    exit 1
  fi
fi
for f in "$AMSYNTH_VST" "$HEXTER_VOICES" "$NEKOBI_VST" "$SONIC_PI_SAMPLE"; do
  [ -f "$f" ] || { echo "[setup] $f still missing after installing the Debian packages" >&2; exit 1; }
done

python3 - <<'PY' || { echo "[setup] Python >= 3.11 is required (found $(python3 --version))" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  python3 -m venv .venv
fi
# Reinstall only when the dependency list changed.
stamp=.venv/.synthprog-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing Python packages into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test,ray]"
  echo "$want" > "$stamp"
fi
echo "[setup] ready: amsynth at $AMSYNTH_VST, hexter voices, Nekobi/Kars, the CC0 Sonic Pi recordings, dexed-py and the Python env in .venv/"
