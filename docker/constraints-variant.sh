#!/bin/sh
# Usage: constraints-variant.sh cpu|cuda constraints.txt  -> constraints for that image variant.
# cuda: the lock as is (torch's PyPI wheels bundle the CUDA 13 runtime; the node needs the driver).
# cpu:  the same versions of torch/torchvision as +cpu builds, without the CUDA libraries.
set -eu
case "$1" in
  cuda) cat "$2" ;;
  cpu) grep -v -E '^(nvidia-|triton==)' "$2" | sed -E 's/^(torch|torchvision)==([0-9.]+)$/\1==\2+cpu/' ;;
  *) echo "VARIANT must be cpu or cuda, got '$1'" >&2; exit 2 ;;
esac
