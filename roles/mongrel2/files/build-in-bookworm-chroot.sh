#!/usr/bin/env bash
# Run build-mongrel2-deb.sh in a throwaway Debian 12 (bookworm) chroot, for a
# host that is not Debian 12: Debian 13's libmbedtls-dev is mbedTLS 3, which
# Mongrel2 1.12 does not build against, so the build needs bookworm's.
#
#   build-in-bookworm-chroot.sh OUTDIR   build, copy the .debs into OUTDIR,
#                                        print their paths (as the build script)
#
# Run as root. The chroot (debootstrap, minbase, bookworm with -updates and
# -security) lives under /var/tmp and is removed afterwards, also when the
# build fails; debootstrap, when this script installs it, is purged again. The
# packages it makes are the same as a Debian 12 host's: the build id does not
# depend on where the build ran. Used by the mongrel2 role (tasks/package.yml).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mirror="${MONGREL2_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${MONGREL2_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

if (($# != 1)) || [[ $1 == -* ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
[[ $(id -u) == 0 ]] || { echo "$0: run as root" >&2; exit 1; }
outdir="$(mkdir -p "$1" && cd "$1" && pwd)"

log() { echo ">> $*" >&2; }

root="$(mktemp -d /var/tmp/mongrel2-bookworm.XXXXXX)"
installed_debootstrap=false
cleanup() {
    local rc=$? m
    # Never rm -rf through a live mount.
    for m in proc dev/pts dev; do
        if mountpoint -q "$root/$m"; then umount -l "$root/$m" || rc=1; fi
    done
    rm -rf --one-file-system "$root"
    if $installed_debootstrap; then
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq debootstrap >/dev/null || rc=1
    fi
    exit "$rc"
}
trap cleanup EXIT

if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    installed_debootstrap=true
fi

log "bootstrapping a bookworm chroot in $root"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -n 30 "$root.log" >&2
    rm -f "$root.log"
    exit 1
}
rm -f "$root.log"
# Build dependencies at their current revisions, security fixes included.
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security_mirror bookworm-security main
EOF
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"

mkdir -p "$root/recipe" "$root/out"
cp -r "$here/build-mongrel2-deb.sh" "$here/patches" "$root/recipe/"
log "building in the chroot"
built="$(chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    MONGREL2_DEBIAN_MIRROR="$mirror" MONGREL2_DEBIAN_SECURITY_MIRROR="$security_mirror" \
    /recipe/build-mongrel2-deb.sh /out)"
[[ -n $built ]] || { echo "$0: the build made no .deb" >&2; exit 1; }
while IFS= read -r deb; do
    cp "$root$deb" "$outdir/"
    echo "$outdir/${deb##*/}"
done <<<"$built"
