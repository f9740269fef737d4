#!/usr/bin/env bash
# Runs this integration target with plain ansible-playbook against localhost, without ansible-test.
# The module runs under the system python3 (no circus, no pyzmq there), as on deployed hosts; circusd and
# circusctl come from the venv. Extra arguments go to ansible-playbook (e.g. -v).
# Env: RINGMASTER_VENV (default <repo>/.venv), CIRCUS_WATCHER_PYTHON (default /usr/bin/python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../../.." && pwd)"
venv="${RINGMASTER_VENV:-$repo/.venv}"
python="${CIRCUS_WATCHER_PYTHON:-/usr/bin/python3}"

work="$(mktemp -d "${TMPDIR:-/tmp}/circus_watcher-run.XXXXXX")"
cleanup() {
    # The play stops its circusd itself; this catches a run that died before its always: section ran.
    local pidfile pid
    for pidfile in "$work"/scratch/*/circusd.pid; do
        [[ -f "$pidfile" ]] || continue
        pid="$(cat "$pidfile")"
        if grep -q circusd "/proc/$pid/cmdline" 2>/dev/null; then
            kill -TERM "$pid" || true
            sleep 3
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/scratch"

# The collection loader only finds ringmaster.stack under .../ansible_collections/ringmaster/stack.
mkdir -p "$work/ansible_collections/ringmaster"
ln -s "$repo" "$work/ansible_collections/ringmaster/stack"

printf 'localhost ansible_connection=local ansible_python_interpreter=%s\n' "$python" >"$work/inventory"
cat >"$work/circus_watcher.yml" <<'PLAY'
---
- name: Integration test of ringmaster.stack.circus_watcher
  hosts: localhost
  gather_facts: false
  roles:
    - circus_watcher
PLAY

# Run from the scratch dir so that no ansible.cfg of the repo or the caller's cwd changes the setup.
cd "$work"
ANSIBLE_COLLECTIONS_PATH="$work" \
ANSIBLE_ROLES_PATH="$repo/tests/integration/targets" \
ANSIBLE_RETRY_FILES_ENABLED=false \
    "$venv/bin/ansible-playbook" -i "$work/inventory" \
    -e "circus_watcher_bindir=$venv/bin" \
    -e "circus_watcher_scratch_parent=$work/scratch" \
    "$work/circus_watcher.yml" "$@"
