#!/usr/bin/env bash
# The sidecar image's size, and where it goes: builds it with .ci/build-image (unless TAG exists),
# then prints the image, its base, the venv and the kubernetes client in it, and git's share.
#   bench/image_size.sh [TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${1:-localhost/edgelake-sidecar:bench}"
BASE="${BASE_IMAGE:-localhost/python:3.11-slim-bookworm}"
buildah=(buildah --storage-driver vfs)
"${buildah[@]}" inspect --type image "$TAG" >/dev/null 2>&1 || bash .ci/build-image "$TAG" >/dev/null
ctr="$("${buildah[@]}" from --pull-never "$TAG")"
trap '"${buildah[@]}" rm "$ctr" >/dev/null' EXIT
inside() { "${buildah[@]}" run --isolation chroot "$ctr" -- "$@"; }
echo "image $TAG: $("${buildah[@]}" images --format '{{.Size}}' "$TAG")"
echo "base $BASE: $("${buildah[@]}" images --format '{{.Size}}' "$BASE")"
echo "venv: $(inside du -sh /opt/venv | cut -f1)"
echo "kubernetes client in it: $(inside du -sh /opt/venv/lib/python3.11/site-packages/kubernetes | cut -f1)"
echo "git, openssh-client, tini and what they pull in (dpkg installed size, KiB):"
inside sh -c 'dpkg-query -W -f "\${Installed-Size}\t\${Package}\n" git git-man perl perl-modules-5.36 libperl5.36 \
  openssh-client tini libcurl3-gnutls liberror-perl 2>/dev/null | sort -rn'
