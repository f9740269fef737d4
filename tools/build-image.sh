#!/usr/bin/env bash
# Build the systemd-capable Debian 12 test image locally: no registry is reachable here,
# so the image is debootstrapped and imported into podman.
set -euo pipefail

image="${RINGMASTER_IMAGE:-localhost/ringmaster-debian12:latest}"
here="$(cd "$(dirname "$0")/.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/tools/containers.conf}"

if [[ "${1:-}" != "--force" ]] && podman image exists "$image"; then
    echo "image $image already present (use --force to rebuild)"
    exit 0
fi

root="$(mktemp -d /var/tmp/ringmaster-rootfs.XXXXXX)"
cleanup() {
    # debootstrap leaves proc/sys/dev mounted on failure; never rm -rf through a live mount.
    for m in proc sys dev/pts dev; do
        if mountpoint -q "$root/$m"; then umount -l "$root/$m" || true; fi
    done
    rm -rf --one-file-system "$root"
}
trap cleanup EXIT

debootstrap --variant=minbase \
    --include=python3,python3-apt,python3-venv,python3-packaging,systemd,systemd-sysv,sudo,ca-certificates,iproute2,procps,curl \
    bookworm "$root"

# The host's own CA bundle additions, or pip/apt over TLS fail inside the containers.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
fi

# Each container must get its own machine-id at boot.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# Units that cannot work in a container and only slow boot down.
for unit in systemd-resolved.service getty.target console-getty.service systemd-udevd.service \
            systemd-udev-trigger.service systemd-networkd-wait-online.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
apt_lists="$root/var/lib/apt/lists"
rm -rf "${apt_lists:?}"/* "$root/var/cache/apt/archives/"*.deb
# An empty list dir with a fresh mtime makes apt's cache_valid_time skip the update.
touch -d @0 "$apt_lists"

for m in proc sys dev/pts dev; do
    if mountpoint -q "$root/$m"; then umount -l "$root/$m" || true; fi
done
tar -C "$root" -c . | podman import \
    --change 'CMD ["/sbin/init"]' \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    - "$image"
echo "built $image"
