#!/usr/bin/env bash
# Everything a fresh Debian 12 machine (as root) lacks to run the lab and the
# tests: Debian packages, the control-node virtualenv, the collection link and
# the test image. Safe to run again: each step is skipped when already done.
# Sourced by demo.sh and test.sh; run on its own (`bash tools/bootstrap.sh`) it
# sets up the machine for typing `molecule test` and the playbooks by hand
# (after `. .venv/bin/activate`).
set -euo pipefail

RINGMASTER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$RINGMASTER_ROOT/.venv"

# chromium, chromium-driver: the console's browser test; libjs-chart.js: the graphs it serves;
# openssl: the bench's https workload asks it which suite names it knows.
_ringmaster_packages=(podman runc debootstrap python3-venv curl git shellcheck openssl chromium chromium-driver libjs-chart.js)

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

# The handler tests run /usr/bin/mongrel2: our build, as the mongrel2 role
# installs it (docs/security.md, "Our Mongrel2 build"), made by the role's
# script and kept by build id, so that a second run only asks for the id.
RINGMASTER_MONGREL2_CACHE=/var/cache/ringmaster
ringmaster_mongrel2() {
    local script="$RINGMASTER_ROOT/roles/mongrel2/files/build-mongrel2-deb.sh"
    local id dir
    id="$("$script" --id)"
    dir="$RINGMASTER_MONGREL2_CACHE/$id"
    if ! compgen -G "$dir/mongrel2-core_*.deb" >/dev/null; then
        echo ">> building Mongrel2 ($id, a few minutes)"
        rm -rf "$dir.partial"
        "$script" "$dir.partial" >/dev/null
        mv -T "$dir.partial" "$dir"
    fi
    local deb version
    deb="$(compgen -G "$dir/mongrel2-core_*.deb")"
    version="$(dpkg-deb -f "$deb" Version)"
    if [[ "$(dpkg-query -W -f='${db:Status-Status} ${Version}' mongrel2-core 2>/dev/null)" != "installed $version" ]]; then
        echo ">> installing Mongrel2 $version"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-change-held-packages \
            --allow-downgrades "$deb" >/dev/null
    fi
    apt-mark hold mongrel2-core >/dev/null
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
    ringmaster_mongrel2
    ringmaster_venv
    ringmaster_collection_link
    export PATH="$VENV/bin:$PATH"
    export CONTAINERS_CONF="$RINGMASTER_ROOT/tools/containers.conf"
    export ANSIBLE_CONFIG="$RINGMASTER_ROOT/ansible.cfg"
    export ANSIBLE_COLLECTIONS_PATH="$RINGMASTER_ROOT/.ansible/collections"
    export PYTHONDONTWRITEBYTECODE=1
    # The test images of both supported releases (molecule/mixed runs both).
    RINGMASTER_RELEASE=12 "$RINGMASTER_ROOT/tools/build-image.sh"
    RINGMASTER_RELEASE=13 "$RINGMASTER_ROOT/tools/build-image.sh"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    ringmaster_bootstrap
fi
