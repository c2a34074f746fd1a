#!/usr/bin/env bash
# The main job: installs what is missing (server packages, the venv), starts a private
# database server on 127.0.0.1 (PostgreSQL by default; --backend mysql for MariaDB) and runs
# `elp demo`, which populates the whole pipeline and prints a summary. Other arguments go to
# `elp demo` (see `.venv/bin/elp demo --help`), e.g. --project PATH --videos V.mp4.
# With DJ_HOST set, no local server is started and that server is used instead.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$REPO"
backend=postgresql
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) backend="$2"; shift 2 ;;
    --backend=*) backend="${1#*=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
ensure_venv .venv "postgres,dev"
if [ -z "${DJ_HOST:-}" ]; then
  ensure_servers_installed
  start_server "$backend"
  log "database: $backend on $DJ_HOST:$DJ_PORT (stop it with: .venv/bin/elp db stop --backend $backend)"
fi
exec "$REPO/.venv/bin/elp" demo --backend "$backend" "${args[@]}"
