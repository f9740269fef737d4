#!/usr/bin/env bash
# Build Debian's own mongrel2 source package (bookworm, newest revision in
# bookworm, bookworm-updates or bookworm-security) with the quilt patches in
# patches/ added, as a local version <Debian version>+ringmaster1.<id>.
#
#   build-mongrel2-deb.sh --id       print the build id and exit: a checksum
#                                    of this script, the patches and the Debian
#                                    source version (mongrel2-<16 hex digits>)
#   build-mongrel2-deb.sh OUTDIR     build, copy the .debs into OUTDIR, print
#                                    their paths (one a line, nothing else on
#                                    stdout)
#
# Run as root on Debian 12. The deb-src index lives in a private apt state
# under $MONGREL2_BUILD_STATE (default /var/cache/ringmaster/mongrel2-build),
# so the host's apt sources are left alone. Build dependencies this script
# installs are purged again, also when the build fails. Used by the mongrel2
# role (tasks/package.yml) and by tools/bootstrap.sh: one recipe.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
patch_dir="${MONGREL2_PATCH_DIR:-$here/patches}"
state="${MONGREL2_BUILD_STATE:-/var/cache/ringmaster/mongrel2-build}"
mirror="${MONGREL2_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${MONGREL2_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
# Bump when the way the package is built changes without a patch changing.
local_revision=1

usage() {
    echo "usage: $0 --id | OUTDIR" >&2
    exit 2
}
(($# == 1)) || usage
[[ $(id -u) == 0 ]] || { echo "$0: run as root" >&2; exit 1; }

log() { echo ">> $*" >&2; }

# apt with only our deb-src entries, its lists and cache under $state.
apt_src() {
    local cmd="$1"
    shift
    "$cmd" -q \
        -o Dir::Etc::SourceList="$state/sources.list" \
        -o Dir::Etc::SourceParts="$state/sources.list.d" \
        -o Dir::State::Lists="$state/lists" \
        -o Dir::Cache="$state/cache" \
        -o APT::Sandbox::User=root \
        "$@"
}

source_version() {
    mkdir -p "$state/sources.list.d" "$state/lists/partial" "$state/cache/archives/partial"
    cat >"$state/sources.list.new" <<EOF
deb-src $mirror bookworm main
deb-src $mirror bookworm-updates main
deb-src $security_mirror bookworm-security main
EOF
    if ! cmp -s "$state/sources.list.new" "$state/sources.list"; then
        mv "$state/sources.list.new" "$state/sources.list"
        rm -f "$state/lists/updated"
    fi
    # Fetched again when older than an hour: a new Debian revision is a new id.
    local stamp="$state/lists/updated"
    if [[ -z $(find "$stamp" -mmin -60 2>/dev/null) ]]; then
        apt_src apt-get update >/dev/null 2>&1 || apt_src apt-get update >&2
        touch "$stamp"
    fi
    # showsrc lists every revision the suites carry; take the highest.
    local versions newest="" v
    versions="$(apt_src apt-cache showsrc mongrel2 2>/dev/null | sed -n 's/^Version: //p')"
    for v in $versions; do
        if [[ -z $newest ]] || dpkg --compare-versions "$v" gt "$newest"; then
            newest="$v"
        fi
    done
    [[ -n $newest ]] || { echo "$0: no mongrel2 source package in bookworm" >&2; exit 1; }
    echo "$newest"
}

series=()
read_series() {
    local line
    while IFS= read -r line || [[ -n $line ]]; do
        line="${line%%#*}"
        line="${line//[[:space:]]/}"
        [[ -n $line ]] && series+=("$line")
    done <"$patch_dir/series"
    ((${#series[@]})) || { echo "$0: $patch_dir/series lists no patch" >&2; exit 1; }
}

build_id() {
    local version="$1" p
    {
        echo "debian-source mongrel2 $version"
        echo "local-revision $local_revision"
        sha256sum <"${BASH_SOURCE[0]}"
        for p in "${series[@]}"; do
            echo "patch $p"
            sha256sum <"$patch_dir/$p"
        done
    } | sha256sum | cut -c1-16
}

read_series
version="$(source_version)"
id="$(build_id "$version")"
if [[ $1 == --id ]]; then
    echo "mongrel2-$id"
    exit 0
fi
[[ $1 != -* ]] || usage
outdir="$(mkdir -p "$1" && cd "$1" && pwd)"
local_version="$version+ringmaster$local_revision.${id:0:8}"

work="$(mktemp -d /tmp/mongrel2-build.XXXXXX)"
before="$work/packages-before"
dpkg-query -W -f='${db:Status-Abbrev} ${binary:Package}\n' | awk '$1 ~ /^.i/ {print $2}' | sort >"$before"

cleanup() {
    local rc=$? after new
    after="$(dpkg-query -W -f='${db:Status-Abbrev} ${binary:Package}\n' | awk '$1 ~ /^.i/ {print $2}' | sort)"
    new="$(comm -13 "$before" <(echo "$after"))"
    if [[ -n $new ]]; then
        log "purging the build dependencies this script installed"
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq $new >/dev/null || rc=1
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

log "fetching Debian's mongrel2 $version source"
(cd "$work" && apt_src apt-get source --download-only "mongrel2=$version" >&2)
dsc="$(echo "$work"/mongrel2_*.dsc)"
[[ -f $dsc ]] || { echo "$0: no .dsc downloaded" >&2; exit 1; }

log "installing build dependencies"
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq "$dsc" >/dev/null

# dpkg-source checks the signature when debian-keyring is present and says
# so otherwise; apt has already checked the .dsc's checksum against the
# signed Sources index.
dpkg-source -x "$dsc" "$work/src" >&2
cd "$work/src"
[[ $(dpkg-parsechangelog -S Version) == "$version" ]] || { echo "$0: unexpected source version" >&2; exit 1; }
for p in "${series[@]}"; do
    cp "$patch_dir/$p" "debian/patches/$p"
    echo "$p" >>debian/patches/series
done

# A changelog entry for the local version, as dch --local would write it.
{
    echo "mongrel2 ($local_version) bookworm; urgency=medium"
    echo
    echo "  * Ringmaster build ($id): add ${series[*]}."
    echo
    echo " -- Ringmaster build <root@localhost>  $(date -R)"
    echo
    cat debian/changelog
} >debian/changelog.new
mv debian/changelog.new debian/changelog

log "building mongrel2 $local_version"
export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=$(nproc)}"
dpkg-buildpackage -b -uc -us >"$work/build.log" 2>&1 || {
    tail -n 60 "$work/build.log" >&2
    echo "$0: dpkg-buildpackage failed" >&2
    exit 1
}
# dpkg-source --before-build applies the patches the series adds: check.
for p in "${series[@]}"; do
    grep -q "applying $p\$" "$work/build.log" || { echo "$0: $p was not applied" >&2; exit 1; }
done

shopt -s nullglob
debs=("$work"/*_"${local_version#*:}"_*.deb)
((${#debs[@]})) || { echo "$0: the build made no .deb" >&2; exit 1; }
for deb in "${debs[@]}"; do
    cp "$deb" "$outdir/"
    echo "$outdir/${deb##*/}"
done
