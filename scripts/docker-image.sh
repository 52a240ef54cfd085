#!/usr/bin/env bash
# Build a tiny busybox image for Docker without any registry.
#
#   scripts/docker-image.sh [TAG]        # default TAG: tabby-busybox:latest
#
# Docker on the test machines cannot pull images, so the end-to-end tests of
# examples/calico-libnetwork make their own: a root filesystem holding a statically linked
# busybox (Debian's busybox-static, /bin/busybox) plus one symlink per applet, fed to
# `docker import` as a tar stream. The image's default command is `sleep 3600` so that
# `docker run -d` keeps the container alive for `docker exec ... ping`.
#
# Environment:
#   BUSYBOX   path of a *static* busybox binary (default: /bin/busybox)
#
# Prints the image tag on stdout. Idempotent: re-importing the same tag replaces it.
# The temporary root filesystem is removed on every exit path.
set -euo pipefail

TAG=${1:-tabby-busybox:latest}
BUSYBOX=${BUSYBOX:-/bin/busybox}

[ -x "$BUSYBOX" ] || { echo "docker-image.sh: $BUSYBOX is not an executable busybox" >&2; exit 1; }
# A dynamically linked busybox would need the host's libc inside the image.
if command -v file >/dev/null 2>&1 && file -L "$BUSYBOX" | grep -q 'dynamically linked'; then
    echo "docker-image.sh: $BUSYBOX is dynamically linked; install busybox-static" >&2
    exit 1
fi
command -v docker >/dev/null || { echo "docker-image.sh: docker CLI not found" >&2; exit 1; }

ROOTFS=$(mktemp -d "${TMPDIR:-/tmp}/tabby-rootfs.XXXXXX")
trap 'rm -rf "$ROOTFS"' EXIT

mkdir -p "$ROOTFS"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root,var/run}
chmod 1777 "$ROOTFS/tmp"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
# `busybox --list-full` prints every applet with its conventional directory (bin/sh, ...).
"$BUSYBOX" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$ROOTFS/$(dirname "$applet")"
    ln -sf /bin/busybox "$ROOTFS/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\n' >"$ROOTFS/etc/group"

tar -C "$ROOTFS" -c . | docker import \
    --change 'CMD ["/bin/sleep", "3600"]' \
    --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
    --message "tabby busybox image (scripts/docker-image.sh)" \
    - "$TAG" >/dev/null
echo "$TAG"
