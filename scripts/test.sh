#!/usr/bin/env bash
# The test command: sets up everything it needs (packages, venvs, private database servers),
# then runs
#   0. lint: ruff (lint + format check) and codespell over the repository, mypy over the engine,
#   1. the database-free tests once (engine, command line, NWB writer, plots; DataJoint 2.x venv),
#   2. the pipeline tests on DataJoint 2.x + PostgreSQL 15,
#   3. the pipeline tests on DataJoint 0.14.10 + MariaDB with element-lab/-session/-array-ephys.
# Extra arguments go to every pytest call (e.g. `-k nwb -x`). ELP_TEST_GROUPS selects groups.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$REPO"
GROUPS_TO_RUN="${ELP_TEST_GROUPS:-lint engine dj2-postgresql dj014-mariadb}"
has() { [[ " $GROUPS_TO_RUN " == *" $1 "* ]]; }

ensure_servers_installed
has engine && ensure_browser_installed
ensure_venv .venv "postgres,dev"
# .venv014 serves only the last group: it is built while the lint and the engine tests run
# (3-4 minutes of a fresh CI machine, mostly downloads), and waited for before that group
venv014_log="$(mktemp "${TMPDIR:-/tmp}/elp-venv014.XXXXXX")"
venv014_pid=""
if has dj014-mariadb; then
  ensure_venv .venv014 "elements,dev" "datajoint==0.14.10" >"$venv014_log" 2>&1 &
  venv014_pid=$!
fi
# the DANDI CLI, in a venv of its own (never a dependency): `dandi validate` checks the dandiset
# layout. Installed beside the lint (a minute, mostly downloads), waited for before the tests
dandi_log="$(mktemp "${TMPDIR:-/tmp}/elp-dandi.XXXXXX")"
dandi_pid=""
install_dandi() {
  ensure_python
  "$PY" -m venv "$REPO/.venv-dandi" && "$REPO/.venv-dandi/bin/pip" install -q "dandi==0.81.0"
}
if has engine || has dj2-postgresql || has dj014-mariadb; then
  export ELP_DANDI="$REPO/.venv-dandi/bin/dandi"
  if [ ! -x "$ELP_DANDI" ]; then
    log "installing the DANDI CLI in .venv-dandi (beside the lint)"
    install_dandi >"$dandi_log" 2>&1 &
    dandi_pid=$!
  fi
fi
built_in_background() {  # built_in_background PID LOG WHAT: waits, shows the build's output; its status
  local built=0
  wait "$1" || built=$?
  cat "$2" >&2
  [ "$built" -eq 0 ] || log "$3 failed (exit $built)"
  return "$built"
}
group_pids=()  # the pipeline groups' subshells, while they run side by side
end_groups() {  # a script that ends early (a cancelled CI run) ends them and their pytest first
  local pid
  for pid in $venv014_pid $dandi_pid; do  # the builds still running
    pkill -P "$pid" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${group_pids[@]}"; do
    # KILL: a test that trains takes SIGTERM as a stop of its run, and pytest goes on
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
  done
}
scratch=""  # the pipeline groups' pytest folders, once made
trap 'end_groups; [ -z "$scratch" ] || rm -rf "$scratch"; rm -f "$venv014_log" "$dandi_log"; stop_servers_we_started' EXIT

results="$REPO/.elp/test-results"; rm -rf "$results"; mkdir -p "$results"
export ELP_REQUIRE_DB=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" PYTHONDONTWRITEBYTECODE=1
status=0
run_group() {  # run_group NAME VENV PATHS...
  local name="$1" venv="$2"; shift 2
  log "pytest [$name]"
  "$REPO/$venv/bin/python" -m pytest -p no:cacheprovider -q --junitxml="$results/$name.xml" \
    "$@" "${PYTEST_ARGS[@]}" || status=1
}
PYTEST_ARGS=("$@")
run_lint() {  # findings fail the run like failing tests do
  log "lint: ruff check, ruff format --check, codespell, mypy (engine)"
  local bin="$REPO/.venv/bin"
  "$bin/ruff" check --no-cache . || status=1
  "$bin/ruff" format --check --no-cache . || status=1
  "$bin/codespell" element_lightning_pose tests docs benchmarks scripts README.md CONTRIBUTING.md CHANGELOG.md || status=1
  "$bin/mypy" --no-incremental || status=1
}

has lint && run_lint
if [ -n "$dandi_pid" ]; then
  built_in_background "$dandi_pid" "$dandi_log" "installing the DANDI CLI" || status=1
  dandi_pid=""
fi

# every test but the pipeline's runs without a database server
has engine && run_group engine .venv tests --ignore=tests/pipeline
# The two pipeline groups talk to different servers from different venvs, so they run side by
# side, on one thread each: their tests wait on the servers and on process start-ups more than
# they compute. Each group's output is shown once it has ended.
pipeline_groups=()
has dj2-postgresql && pipeline_groups+=("dj2-postgresql postgresql .venv")
if [ -n "$venv014_pid" ]; then
  if built_in_background "$venv014_pid" "$venv014_log" "building .venv014 (the dj014-mariadb group cannot run)"; then
    pipeline_groups+=("dj014-mariadb mysql .venv014")
  else
    status=1
  fi
  venv014_pid=""
fi
declare -A server_env=()
scratch="$(mktemp -d "${TMPDIR:-/tmp}/elp-pipeline-tests.XXXXXX")"  # each group's own pytest folders
for group in "${pipeline_groups[@]}"; do
  read -r name backend venv <<<"$group"
  start_server "$backend"
  server_env[$name]="$("$REPO/.venv/bin/elp" db env --backend "$backend")"  # its DJ_* variables
done
for group in "${pipeline_groups[@]}"; do
  read -r name backend venv <<<"$group"
  log "pytest [$name] (side by side; its output follows when it ends)"
  (
    eval "${server_env[$name]}"
    export OMP_NUM_THREADS=1
    run_group "$name" "$venv" tests/pipeline --basetemp="$scratch/$name"
    exit "$status"
  ) >"$results/$name.log" 2>&1 &
  group_pids+=("$!")
done
for i in "${!pipeline_groups[@]}"; do
  read -r name _ <<<"${pipeline_groups[$i]}"
  wait "${group_pids[$i]}" || status=1
  cat "$results/$name.log"
done
group_pids=()
rm -rf "$scratch"

"$REPO/.venv/bin/python" - "$results" <<'PY'
import sys, pathlib, xml.etree.ElementTree as ET
total = {"passed": 0, "failed": 0, "skipped": 0}
print("\ntest summary (group: passed / failed / skipped)")
for xml in sorted(pathlib.Path(sys.argv[1]).glob("*.xml")):
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n, f, e, s = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    counts = {"passed": n - f - e - s, "failed": f + e, "skipped": s}
    for k in total: total[k] += counts[k]
    print(f"  {xml.stem:16s} {counts['passed']:4d} / {counts['failed']:3d} / {counts['skipped']:3d}")
print(f"summary: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
PY
exit $status
