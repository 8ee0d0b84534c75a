#!/bin/sh
# Build the Debian 12 base image locally when it is missing: no image registry is reachable from the
# build machines, Debian's package mirror is. debootstrap --variant=minbase (apt, dpkg, no systemd)
# into a scratch directory, then `podman import` of its tar. Usage: base.sh IMAGE WORKDIR [MIRROR]
set -eu
image=$1
work=$2
mirror=${3:-http://deb.debian.org/debian}
podman="podman --runtime runc --cgroup-manager=cgroupfs"
if $podman image exists "$image"; then
    echo "base image $image exists"
    exit 0
fi
for tool in debootstrap podman; do
    command -v $tool >/dev/null || { echo "base.sh: $tool is needed (apt-get install $tool)" >&2; exit 1; }
done
rm -rf "$work/rootfs"
mkdir -p "$work"
debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror"
# Small and reproducible enough: no package lists, no docs, no apt cache in the layer.
rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin "$work/rootfs/usr/share/doc/"* \
    "$work/rootfs/usr/share/man/"*
tar -C "$work/rootfs" -c . | $podman import --change 'CMD ["/bin/bash"]' - "$image"
rm -rf "$work/rootfs"
