#!/usr/bin/env bash
# Every test: lint, unit tests, the handler's tests against a real Mongrel2,
# the console's tests (a real circusd, headless Chromium),
# the module's sanity and integration tests against a real circusd, the
# preflight tests and the Molecule scenarios in systemd containers, faults
# included (CI runs exactly this). --no-faults leaves molecule/faults out, for
# a quicker pass by hand.
set -euo pipefail
scenarios=(default cluster mixed faults)
case "${1:-}" in
    "") ;;
    --no-faults) scenarios=(default cluster mixed) ;;
    *) echo "usage: $0 [--no-faults]" >&2; exit 2 ;;
esac
# shellcheck source=tools/bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
ringmaster_bootstrap
cd "$RINGMASTER_ROOT"

stage() { printf '\n==== %s ====\n' "$*"; }

stage "lint: yamllint"
yamllint --strict .
stage "lint: ansible-lint (production profile)"
ansible-lint --offline
stage "lint: ruff"
ruff check .
ruff format --check .

stage "lint: shellcheck"
shellcheck -x .ci/run tools/*.sh roles/mongrel2/files/*.sh tests/integration/targets/circus_watcher/run-local.sh

stage "lint: paths the documentation cites"
python3 tools/check-doc-paths.py

stage "lint: changelog fragments"
antsibull-changelog lint

stage "unit tests: argument specs, secrets, modules, filter, flapping plugin, load client, doc-path check"
python -m pytest -q -p no:cacheprovider tests/unit

stage "handler: unit, property and integration tests (real Mongrel2)"
# The throughput measurement alone, then the rest on two workers: most of it waits on
# processes and timeouts, not on the CPU.
python -m pytest -q -p no:cacheprovider -m alone files/ringmaster-handler/tests
python -m pytest -q -p no:cacheprovider -m "not alone" -n 2 --dist loadfile --durations=15 files/ringmaster-handler/tests

stage "console: unit, real circusd and agent over CURVE, headless Chromium"
python -m pytest -q -p no:cacheprovider files/ringmaster-console/tests

stage "module: ansible-test sanity and units"
bash tools/ansible-test.sh

stage "module: integration against a real circusd"
bash tests/integration/targets/circus_watcher/run-local.sh

stage "deploy.yml and scale.yml: bad input fails before any change (real container)"
# On two workers, cases dealt out one by one: each worker boots its own container (the fixture
# is per module and worker) and no case changes anything another can see.
python -m pytest -q -p no:cacheprovider -n 2 --dist load tests/integration/test_deploy_preflight.py tests/integration/test_scale_preflight.py

# The scenarios in two lanes side by side: each has its own containers,
# network and addresses, and most of a scenario's time is spent waiting on
# SSH, apt and pip, not on the CPU. Each line says its scenario.
lane() {
    local scenario
    for scenario in "$@"; do
        stage "molecule test -s $scenario"
        if ! molecule test -s "$scenario" 2>&1 | sed -u "s/^/[$scenario] /"; then
            stage "molecule test -s $scenario FAILED"
            return 1
        fi
    done
}
half=$(( (${#scenarios[@]} + 1) / 2 ))
lane "${scenarios[@]:0:half}" &
first=$!
lane "${scenarios[@]:half}" &
second=$!
failed=0
wait "$first" || failed=1
wait "$second" || failed=1
exit "$failed"
