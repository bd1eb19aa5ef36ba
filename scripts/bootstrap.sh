#!/usr/bin/env bash
# Install everything a fresh Debian 12 / Python 3.11 machine needs; safe to run again.
# System packages: espeak-ng (TTS fallback). Python: a venv in .venv with the pinned CPU set.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(espeak-ng docker-compose chromium ${SYNCTALK_EXTRA_APT:-})
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "bootstrap: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
# Reinstall only when the pins change.
stamp=.venv/.synctalk-installed
want=$(cat pyproject.toml constraints/cpu.txt | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "bootstrap: pip install (CPU set)"
  .venv/bin/pip install -q --disable-pip-version-check -c constraints/cpu.txt -e '.[cpu,dev]'
  echo "$want" > "$stamp"
fi
