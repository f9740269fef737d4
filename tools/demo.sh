#!/usr/bin/env bash
# The main job on local containers: build the test image, start the lab from
# inventory/lab/hosts.yml (one front, two workers), deploy the stack with
# playbooks/deploy.yml (two sites: the sample app over HTTPS, the Django sample
# over plain HTTP) and fetch responses from both through Mongrel2.
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
notes="http://notes.localhost:18081/"
echo
echo ">> site 1, the sample app on both workers, through Mongrel2's TLS at $url (verified against $ca)"
for _ in 1 2 3 4 5 6; do
    curl -fsS --cacert "$ca" --retry 10 --retry-connrefused --retry-delay 1 --max-time 5 "$url"
done
echo ">> the app sees: $(curl -fsS --cacert "$ca" --max-time 5 "${url}scheme")"
echo ">> POST /echo:"
curl -fsS --cacert "$ca" --max-time 5 --data-binary 'ringmaster echoes this body' "${url}echo"
echo
echo ">> plain HTTP for that name is redirected: $(curl -sS --max-time 5 -o /dev/null -w '%{http_code} -> %{redirect_url}' http://localhost:18081/)"
echo
echo ">> site 2, the Django sample on the second worker, plain HTTP at $notes"
echo ">> who answered: $(curl -fsS --retry 10 --retry-connrefused --retry-delay 1 --max-time 5 "${notes}whoami")"
css="${notes}static/notes/site.css"
etag=$(curl -fsS --max-time 5 -o /dev/null -w '%header{etag}' "$css")
echo ">> its stylesheet from the front (collectstatic), revalidated: $(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$css")"
jar=$(mktemp)
trap 'rm -f "$jar"' EXIT
curl -fsS --max-time 5 -c "$jar" -o /dev/null "${notes}upload"
token=$(awk '$6 == "csrftoken" {print $7}' "$jar")
echo ">> an upload (Django's CSRF token, stored in the site's own data directory):"
curl -fsS --max-time 30 -b "$jar" -H "X-CSRFToken: $token" -F file=@README.md "${notes}upload"
echo
echo ">> the lab stays up: try 'curl --cacert $ca $url' and 'curl $notes'; remove it with:"
echo "   .venv/bin/ansible-playbook -i inventory/lab/hosts.yml playbooks/lab.yml -e lab_state=absent"
