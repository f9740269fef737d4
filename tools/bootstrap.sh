#!/usr/bin/env bash
# Everything a fresh Debian 12 machine (as root) lacks to run the lab and the
# tests: Debian packages, the control-node virtualenv, the collection link and
# the test image. Safe to run again: each step is skipped when already done.
# Sourced by demo.sh and test.sh.
set -euo pipefail

RINGMASTER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$RINGMASTER_ROOT/.venv"

_ringmaster_packages=(podman runc debootstrap mongrel2-core python3-venv curl git shellcheck)

ringmaster_install_packages() {
    local missing=()
    for pkg in "${_ringmaster_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        echo ">> installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

ringmaster_venv() {
    local stamp="$VENV/.requirements.sha256"
    local want
    want="$(sha256sum "$RINGMASTER_ROOT/requirements-dev.txt" | cut -d' ' -f1)"
    if [[ ! -x "$VENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
        echo ">> creating the control-node virtualenv in $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --upgrade pip
        "$VENV/bin/pip" install -q -r "$RINGMASTER_ROOT/requirements-dev.txt"
        echo "$want" > "$stamp"
    fi
}

# ansible-playbook resolves ringmaster.stack.* through this link (see ansible.cfg).
ringmaster_collection_link() {
    local dir="$RINGMASTER_ROOT/.ansible/collections/ansible_collections/ringmaster"
    mkdir -p "$dir"
    ln -sfn ../../../.. "$dir/stack"
}

ringmaster_bootstrap() {
    ringmaster_install_packages
    ringmaster_venv
    ringmaster_collection_link
    export PATH="$VENV/bin:$PATH"
    export CONTAINERS_CONF="$RINGMASTER_ROOT/tools/containers.conf"
    export ANSIBLE_CONFIG="$RINGMASTER_ROOT/ansible.cfg"
    export ANSIBLE_COLLECTIONS_PATH="$RINGMASTER_ROOT/.ansible/collections"
    export PYTHONDONTWRITEBYTECODE=1
    "$RINGMASTER_ROOT/tools/build-image.sh"
}
