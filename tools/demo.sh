#!/usr/bin/env bash
# The main job on local containers: build the test image, start the lab from
# inventory/lab/hosts.yml (one front, two workers), deploy the stack with
# playbooks/deploy.yml and fetch responses through Mongrel2.
set -euo pipefail
# shellcheck source=tools/bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
ringmaster_bootstrap
cd "$RINGMASTER_ROOT"

ansible-playbook -i inventory/lab/hosts.yml playbooks/lab.yml
ansible-playbook -i inventory/lab/hosts.yml playbooks/deploy.yml

url="http://127.0.0.1:18080/"
echo
echo ">> responses fetched through Mongrel2 at $url"
for _ in 1 2 3 4 5 6; do
    curl -fsS --retry 10 --retry-connrefused --retry-delay 1 --max-time 5 "$url"
done
echo ">> POST /echo:"
curl -fsS --max-time 5 --data-binary 'ringmaster echoes this body' "${url}echo"
echo
echo ">> the lab stays up: try 'curl $url'; remove it with:"
echo "   .venv/bin/ansible-playbook -i inventory/lab/hosts.yml playbooks/lab.yml -e lab_state=absent"
