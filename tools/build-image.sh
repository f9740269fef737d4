#!/usr/bin/env bash
# Build a systemd-capable Debian test image locally: no registry is reachable here, so the
# image is debootstrapped and imported into podman. RINGMASTER_RELEASE picks the release:
# 12 (bookworm, the default) or 13 (trixie); both are set up the same way.
set -euo pipefail

release="${RINGMASTER_RELEASE:-12}"
case "$release" in
    12) suite=bookworm ;;
    13) suite=trixie ;;
    *) echo "$0: RINGMASTER_RELEASE must be 12 or 13, got $release" >&2; exit 2 ;;
esac
# The tag names the image's contents: raise it when they change, so a machine that holds an
# older build gets a new one instead of reusing it (2: openssh-server, for SSH like production).
image="${RINGMASTER_IMAGE:-localhost/ringmaster-debian$release:2}"
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
    --include=python3,python3-apt,python3-venv,python3-packaging,systemd,systemd-sysv,sudo,ca-certificates,iproute2,procps,curl,openssh-server,openssh-sftp-server \
    "$suite" "$root"

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
# sshd: the lab and Molecule reach the containers over SSH, as operators reach their hosts.
# Each container makes its own host keys at first boot (none are baked into the image);
# loginuid cannot be set without CAP_AUDIT_CONTROL, which containers lack.
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/etc/systemd/system/ssh.service.d"
cat > "$root/etc/systemd/system/ssh.service.d/hostkeys.conf" <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
sed -i -E 's/^(session\s+)required(\s+pam_loginuid\.so)/\1optional\2/' "$root/etc/pam.d/sshd"
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
