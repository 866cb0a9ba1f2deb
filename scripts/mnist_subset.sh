#!/bin/bash
# mnist_subset.sh SRC DST N: MNIST's first N training examples and its whole
# test split, as IDX files in DST. The build makes the tests' smaller MNIST
# with it (tests/CMakeLists.txt): simulations whose checks do not depend on
# the amount of data run on 12,000 examples instead of 60,000.
set -euo pipefail
src=$1 dst=$2 n=$3
if [ ! -f "$src/train-images-idx3-ubyte" ]; then
  echo "mnist_subset: no MNIST in $src (scripts/setup.sh fetches it); tests on it will fail" >&2
  exit 0
fi
# A big-endian 32-bit count, the IDX header's second word.
be32() {
  printf "\\x$(printf %02x $(($1 >> 24 & 255)))\\x$(printf %02x $(($1 >> 16 & 255)))"
  printf "\\x$(printf %02x $(($1 >> 8 & 255)))\\x$(printf %02x $(($1 & 255)))"
}
# IDX: magic, count, then (images) rows and columns, then the records.
subset() {  # subset FILE RECORD_BYTES HEADER_BYTES
  local in="$src/$1"
  {
    head -c 4 "$in"
    be32 "$n"
    dd if="$in" bs=1M iflag=skip_bytes,count_bytes skip=8 count=$(($3 - 8 + n * $2)) status=none
  } > "$dst.tmp/$1"
}
rm -rf "$dst.tmp"
mkdir -p "$dst.tmp"
subset train-images-idx3-ubyte 784 16
subset train-labels-idx1-ubyte 1 8
cp "$src"/t10k-images-idx3-ubyte "$src"/t10k-labels-idx1-ubyte "$dst.tmp/"
rm -rf "$dst"
mv "$dst.tmp" "$dst"
