#!/usr/bin/env bash
# The local base image: Debian bookworm (minbase) with Debian's Python 3.11, made with debootstrap from Debian's
# packages, for machines that reach Debian's mirror but no image registry. It stands in for python:3.11-slim
# (also bookworm and Python 3.11): `make image IMAGE_BASE=local` and `make image-test` build on it.
#
#   image/base.sh [TAG]      (root: debootstrap and chroot need it; TAG defaults to nhs111-base:bookworm-py311)
#
# The root filesystem is kept as a tarball in the image cache (NHS111_IMAGE_CACHE, by default
# ~/.cache/nhs111-image), so a new Docker engine gets the base back with a `docker import` of seconds instead of a
# debootstrap of minutes. Delete the tarball to take Debian's newer packages.
set -euo pipefail

tag=${1:-nhs111-base:bookworm-py311}
cache=${NHS111_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nhs111-image}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
docker=${DOCKER:-docker}
tarball=$cache/base-bookworm-py311.tar

mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || { echo "image/base.sh: debootstrap is missing (apt-get install debootstrap)" >&2; exit 2; }
    root=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    echo "debootstrap bookworm into $root (a few minutes)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" >"$root.log" 2>&1 \
        || { tail -20 "$root.log" >&2; exit 1; }
    rm -f "$root.log"
    cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
SOURCES
    # Security and point-release updates on top of what debootstrap took from the release itself.
    chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c \
        'apt-get update -qq && apt-get upgrade -y -qq >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*'
    # As the official images do: no documentation, no apt caches, no man pages in the base.
    rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/cache/apt/*.bin
    tar --numeric-owner -C "$root" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
fi

if ! "$docker" image inspect "$tag" >/dev/null 2>&1; then
    "$docker" import \
        --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' \
        "$tarball" "$tag" >/dev/null
    echo "imported $tarball as $tag"
fi
