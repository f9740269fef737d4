#!/usr/bin/env bash
# Runs ansible-test on ringmaster.stack from a checkout.
#
#   tools/ansible-test.sh [sanity] [units] [integration] [-- EXTRA-ANSIBLE-TEST-ARGS...]
#
# Default: sanity units. ansible-test only works inside .../ansible_collections/<namespace>/<name>, so the content is
# copied into such a tree in a temp dir first (a symlink does not do: ansible-test resolves the real path).
#
# Env:
#   RINGMASTER_VENV            venv with ansible-core and circus (default: <repo>/.venv)
#   ANSIBLE_TEST_SCOPE         "module" (default): galaxy.yml, meta/, plugins/, tests/unit/,
#                              tests/integration/targets/circus_watcher/ and tests/sanity/ only;
#                              "collection": the whole checkout, for sanity over everything.
#   ANSIBLE_TEST_TARGETS       what sanity/units test (default: the circus_watcher and circus_info modules and their unit tests;
#                              set to "" for everything in scope).
#   RINGMASTER_ANSIBLE_TEST_HOME  HOME for ansible-test, which keeps its per-test venvs there between runs
#                              (default: ${XDG_CACHE_HOME:-$HOME/.cache}/ringmaster-ansible-test).
#
# Sanity and units run in ansible-test's own venvs (--venv), whose pinned requirements come from PyPI.
# Integration runs --local from RINGMASTER_VENV, which has circus for the target's circusd.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RINGMASTER_VENV:-$repo/.venv}"
scope="${ANSIBLE_TEST_SCOPE:-module}"
python_version=3.11
ansible_test="$venv/bin/ansible-test"
test_home="${RINGMASTER_ANSIBLE_TEST_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/ringmaster-ansible-test}"

commands=()
extra=()
while (($#)); do
    case "$1" in
        sanity | units | integration) commands+=("$1") ;;
        --) shift; extra=("$@"); break ;;
        *) echo "usage: $0 [sanity] [units] [integration] [-- EXTRA-ANSIBLE-TEST-ARGS...]" >&2; exit 2 ;;
    esac
    shift
done
((${#commands[@]})) || commands=(sanity units)

if [[ -v ANSIBLE_TEST_TARGETS ]]; then
    read -r -a sanity_targets <<<"$ANSIBLE_TEST_TARGETS"
    units_targets=("${sanity_targets[@]}")
else
    sanity_targets=(plugins/modules/circus_watcher.py tests/unit/plugins/modules/test_circus_watcher.py
        plugins/modules/circus_info.py tests/unit/plugins/modules/test_circus_info.py plugins/module_utils/circusctl.py
        plugins/doc_fragments/circus.py plugins/filter/fleet_status.py tests/unit/plugins/filter/test_fleet_status.py
        tests/unit/conftest.py tests/integration/targets/circus_watcher/)
    units_targets=(tests/unit/plugins/modules/test_circus_watcher.py tests/unit/plugins/modules/test_circus_info.py
        tests/unit/plugins/filter/test_fleet_status.py)
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ringmaster-ansible-test.XXXXXX")"
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/ringmaster/stack"
mkdir -p "$dest"

# Without .git in the copy ansible-test takes every file in the tree, so the copy decides what is tested.
excludes=(--exclude=.venv --exclude=.git --exclude=tests/output --exclude=__pycache__ --exclude=.pytest_cache
    --exclude=.ruff_cache --exclude=.ansible --exclude='*.tar.gz')
case "$scope" in
    module)
        paths=()
        for path in galaxy.yml meta plugins tests/unit tests/integration/targets/circus_watcher tests/sanity; do
            [[ -e "$repo/$path" ]] && paths+=("$path")
        done
        tar -C "$repo" "${excludes[@]}" -cf - "${paths[@]}" | tar -C "$dest" -xf -
        ;;
    collection)
        tar -C "$repo" "${excludes[@]}" -cf - . | tar -C "$dest" -xf -
        ;;
    *) echo "ANSIBLE_TEST_SCOPE must be module or collection, not $scope" >&2; exit 2 ;;
esac

# ansible-test bootstraps pip into each venv with a get-pip.py downloaded from a host outside PyPI, which is not
# reachable here. Its message says to put the script into its cache instead; this stand-in does the same job with
# the Python's own ensurepip and then pip-installs what ansible-test asked for from PyPI.
pip_version="$("$venv/bin/python" - <<'PY' 2>/dev/null || echo 24.2
from types import SimpleNamespace
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(SimpleNamespace(version='3.11'))['pip'])
PY
)"
get_pip="$test_home/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if [[ ! -f "$get_pip" ]]; then
    mkdir -p "$(dirname "$get_pip")"
    cat >"$get_pip" <<'PY'
# Stand-in for get-pip.py written by ringmaster's tools/ansible-test.sh: ensurepip, then pip install from PyPI.
import subprocess
import sys

args = [arg for arg in sys.argv[1:] if arg not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'])
subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)
if '--no-setuptools' in sys.argv:
    subprocess.call([sys.executable, '-m', 'pip', 'uninstall', '--yes', '--quiet', 'setuptools'])
PY
fi

# A private TMPDIR: ansible-test keeps scripts it runs later in temp files, and /tmp is shared with other jobs.
mkdir "$work/tmp"

run() {
    echo "+ ansible-test $*" >&2
    (cd "$dest" && HOME="$test_home" TMPDIR="$work/tmp" PATH="$venv/bin:$PATH" "$ansible_test" "$@")
}

status=0
for command in "${commands[@]}"; do
    case "$command" in
        sanity)
            run sanity --python "$python_version" --venv --color no "${extra[@]}" "${sanity_targets[@]}" || status=1
            ;;
        units)
            run units --python "$python_version" --venv --color no "${extra[@]}" "${units_targets[@]}" || status=1
            ;;
        integration)
            # --local: the target starts circusd from this venv (circus_watcher_bindir defaults to its bin/).
            run integration --local --python "$python_version" --color no "${extra[@]}" circus_watcher || status=1
            ;;
    esac
done
exit "$status"
