#!/bin/sh
# Build client_web/kernel/flkernel.wasm with Debian's clang + wasm-ld (no emscripten, no libc).
# Deterministic: fixed flags, sorted inputs, no debug info or build paths in the output; the test suite rebuilds
# it and checks it is byte-identical to the committed file.
#   usage: build.sh [OUTPUT]   (default: flkernel.wasm beside this script)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/flkernel.wasm}
CLANG=${CLANG:-clang}
WASM_LD=${WASM_LD:-wasm-ld}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CFLAGS="--target=wasm32 -msimd128 -mbulk-memory -nostdlib -O3 -ffreestanding -fno-builtin-memset -fno-builtin-memcpy
        -fno-ident -g0 -Wall -Wextra -Werror -Wno-unused-parameter"
objs=""
for src in dp.c field.c gemm.c math.c memory.c nn.c; do
    # compile from inside the kernel directory with relative names so no absolute path can reach the object
    (cd "$here" && $CLANG $CFLAGS -c "$src" -o "$tmp/${src%.c}.o")
    objs="$objs $tmp/${src%.c}.o"
done
# shellcheck disable=SC2086
$WASM_LD --no-entry --strip-all --export-dynamic --initial-memory=1048576 --max-memory=2147483648 \
    --stack-first -z stack-size=262144 $objs -o "$tmp/flkernel.wasm"
cp "$tmp/flkernel.wasm" "$out"
