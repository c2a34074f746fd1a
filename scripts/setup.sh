#!/usr/bin/env bash
# Idempotent set-up shared by scripts/test.sh and scripts/demo.sh (source it, don't run it).
#  - Debian packages: PostgreSQL and MariaDB servers (installed with apt-get when missing)
#  - .venv     : DataJoint 2.x + the element (+ psycopg2, test/doc tools)
#  - .venv014  : DataJoint 0.14.10 + the element + element-lab/-animal/-session/-array-ephys
# A venv is rebuilt only when pyproject.toml or its pins change (a stamp file records them).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3.11}"
log() { printf '\033[1m[elp setup +%ss]\033[0m %s\n' "$SECONDS" "$*" >&2; }  # seconds since the script started

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; return 1; fi
}

ensure_apt() {  # ensure_apt PACKAGE... (installs those whose dpkg status is not 'installed')
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_python() {
  command -v "$PY" >/dev/null && return 0
  ensure_apt python3 python3-venv python3-dev
  PY=python3
}

# PyTorch with its CUDA libraries is ~5.5 GB: a second venv gets hard links to .venv's copy
# (scripts/share_packages.py), so a CI disk holds it once; pip then finds it installed.
share_torch_from_main_venv() {  # share_torch_from_main_venv NAME DIR
  [ "$1" != .venv ] && [ -x "$REPO/.venv/bin/python" ] || return 0
  local site; site="$("$2/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  "$REPO/.venv/bin/python" "$REPO/scripts/share_packages.py" "$site" \
    torch torchvision triton 'nvidia-*' 'cuda-*' >&2 || log "could not share PyTorch; pip installs it"
}

ensure_venv() {  # ensure_venv DIR EXTRAS [EXTRA PIP REQUIREMENTS...]
  local name="$1" dir="$REPO/$1" extras="$2"; shift 2
  local stamp_text; stamp_text="$(cat "$REPO/pyproject.toml"; echo "$extras $*")"
  local stamp; stamp="$(printf '%s' "$stamp_text" | sha256sum | cut -c1-16)"
  if [ -f "$dir/.elp-stamp" ] && [ "$(cat "$dir/.elp-stamp")" = "$stamp" ]; then return 0; fi
  ensure_python
  "$PY" -c 'import ensurepip' 2>/dev/null || ensure_apt python3-venv
  log "building $name (element[$extras] $*) — the first time takes a few minutes"
  [ -x "$dir/bin/python" ] || "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip wheel >/dev/null
  share_torch_from_main_venv "$name" "$dir"
  "$dir/bin/python" -m pip install -q -e "$REPO[$extras]" "$@"
  echo "$stamp" > "$dir/.elp-stamp"
}

ensure_browser_installed() {  # the app's browser tests drive Debian's chromium (Playwright cannot download its own here)
  ensure_apt chromium
}

ensure_servers_installed() {
  ensure_apt postgresql mariadb-server mariadb-client
}

# start_server BACKEND -> exports DJ_* for it; records whether we started it (to stop it later)
start_server() {
  local backend="$1" venv="${2:-.venv}"
  if "$REPO/$venv/bin/elp" db status --backend "$backend" >/dev/null 2>&1; then
    STARTED_BY_US="${STARTED_BY_US:-}"
  else
    local port_var="ELP_${backend^^}_PORT" port_args=()   # ELP_POSTGRESQL_PORT / ELP_MYSQL_PORT
    [ -n "${!port_var:-}" ] && port_args=(--port "${!port_var}")
    "$REPO/$venv/bin/elp" db start --backend "$backend" "${port_args[@]}" >/dev/null
    STARTED_BY_US="${STARTED_BY_US:-} $backend"
  fi
  eval "$("$REPO/$venv/bin/elp" db env --backend "$backend")"
}

stop_servers_we_started() {
  for backend in ${STARTED_BY_US:-}; do
    "$REPO/.venv/bin/elp" db stop --backend "$backend" >/dev/null || true
  done
}
