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
# The front serves HTTPS with a certificate for localhost from a throwaway CA.
ca=.ansible/lab/tls/ca.crt
tools/lab-ca.sh .ansible/lab/tls site localhost
ansible-playbook -i inventory/lab/hosts.yml playbooks/deploy.yml

url="https://localhost:18080/"
echo
echo ">> responses fetched through Mongrel2 at $url (its TLS, verified against $ca)"
for _ in 1 2 3 4 5 6; do
    curl -fsS --cacert "$ca" --retry 10 --retry-connrefused --retry-delay 1 --max-time 5 "$url"
done
echo ">> the app sees: $(curl -fsS --cacert "$ca" --max-time 5 "${url}scheme")"
echo ">> POST /echo:"
curl -fsS --cacert "$ca" --max-time 5 --data-binary 'ringmaster echoes this body' "${url}echo"
echo
echo ">> the lab stays up: try 'curl --cacert $ca $url'; remove it with:"
echo "   .venv/bin/ansible-playbook -i inventory/lab/hosts.yml playbooks/lab.yml -e lab_state=absent"
