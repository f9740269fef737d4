#!/usr/bin/env bash
# Let Ansible reach test containers over SSH, as operators reach their hosts:
#   container-ssh.sh DIR NAME ADDRESS [NAME ADDRESS ...]
# DIR gets a throwaway key (made once per DIR: a lab or a Molecule run, never committed) and a
# known_hosts with each container's own host key, read through podman (the one channel that
# needs no SSH), so host key checking stays on. Each container gets the public key for root,
# then the script waits until `ssh root@ADDRESS` works.
set -euo pipefail

if (($# < 3 || ($# - 1) % 2)); then
    echo "usage: $0 DIR NAME ADDRESS [NAME ADDRESS ...]" >&2
    exit 2
fi
dir="$1"
shift
mkdir -p "$dir"
chmod 0700 "$dir"
key="$dir/id_ed25519"
if [[ ! -s "$key" ]]; then
    ssh-keygen -q -t ed25519 -N '' -C "ringmaster throwaway $(date -u +%F)" -f "$key"
fi

known="$dir/known_hosts"
: >"$known.new"
while (($#)); do
    name="$1" address="$2"
    shift 2
    podman exec -i "$name" sh -c 'umask 077 && mkdir -p /root/.ssh && cat > /root/.ssh/authorized_keys' <"$key.pub"
    # sshd makes the host keys when it first starts (tools/build-image.sh).
    for _ in $(seq 300); do
        if podman exec "$name" systemctl is-active --quiet ssh; then break; fi
        sleep 0.1
    done
    hostkey="$(podman exec "$name" cat /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f1,2)"
    echo "$address $hostkey" >>"$known.new"
    for _ in $(seq 100); do
        if ssh -o BatchMode=yes -o ConnectTimeout=2 -o UserKnownHostsFile="$known.new" \
            -o StrictHostKeyChecking=yes -i "$key" "root@$address" true 2>/dev/null; then
            continue 2
        fi
        sleep 0.2
    done
    echo "$name: no SSH at root@$address" >&2
    exit 1
done
mv "$known.new" "$known"
