#!/usr/bin/env bash
# Builds the Squall runtime image without pulling anything: the binaries are
# built on this host (or taken from --bin-dir), laid out by docker/rootfs.sh,
# and put in an image FROM scratch (docker/Dockerfile.local, the same runtime
# stage as docker/Dockerfile). Works on a Docker engine with no registry.
#
#   docker/build-image.sh                       # cargo build --release, tag squall:latest
#   docker/build-image.sh --profile ci          # reuse the test profile's build (no LTO)
#   docker/build-image.sh --bin-dir target/ci --tag squall:test
#
# Prints the image id on the last line of stdout.
set -euo pipefail

usage() {
    echo "usage: $0 [--profile PROFILE | --bin-dir DIR] [--tag NAME:TAG]" >&2
    exit 2
}

root=$(cd "$(dirname "$0")/.." && pwd)
profile=release
bin_dir=
tag=squall:latest
while [ $# -gt 0 ]; do
    case $1 in
        --profile) [ $# -ge 2 ] || usage; profile=$2; shift 2 ;;
        --bin-dir) [ $# -ge 2 ] || usage; bin_dir=$2; shift 2 ;;
        --tag) [ $# -ge 2 ] || usage; tag=$2; shift 2 ;;
        -h|--help) usage ;;
        *) echo "build-image.sh: unknown argument $1" >&2; usage ;;
    esac
done
command -v docker >/dev/null 2>&1 || { echo "build-image.sh: docker is not installed" >&2; exit 2; }

if [ -z "$bin_dir" ]; then
    echo "build-image.sh: cargo build --profile $profile (coordinator, worker)" >&2
    (cd "$root" && cargo build --profile "$profile" --bins -p squall-coordinator -p squall-worker >&2)
    target_dir=${CARGO_TARGET_DIR:-$root/target}
    case $profile in
        dev|test) bin_dir=$target_dir/debug ;;
        *) bin_dir=$target_dir/$profile ;;
    esac
fi

context=$(mktemp -d "${TMPDIR:-/tmp}/squall-image.XXXXXX")
trap 'rm -rf "$context"' EXIT
"$root/docker/rootfs.sh" "$bin_dir" "$context/rootfs"
cp "$root/docker/Dockerfile.local" "$context/Dockerfile"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)
echo "build-image.sh: docker build -t $tag ($(du -sh "$context/rootfs" | cut -f1) of files)" >&2
# The legacy builder builds FROM scratch without a registry and needs no
# buildx plugin; its deprecation notice is shown only if the build fails.
if ! DOCKER_BUILDKIT=0 docker build --quiet \
    --label "org.opencontainers.image.title=squall" \
    --label "org.opencontainers.image.version=$version" \
    -t "$tag" "$context" 2>"$context/build.err"; then
    cat "$context/build.err" >&2
    echo "build-image.sh: docker build failed" >&2
    exit 1
fi
echo "build-image.sh: built $tag, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{ printf "%.1f MB", $1 / 1e6 }')" >&2
