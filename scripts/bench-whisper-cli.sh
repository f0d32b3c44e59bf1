#!/usr/bin/env bash
# Whisper speed through voxloop vs. a plain C program (benches/whisper_cli.c)
# linked to the same whisper.cpp sources that whisper-rs-sys vendors.
#
# Builds the C side (idempotent) into $BUILD_DIR, then runs both sides on the
# same files with the full 30 s window and with voxloop's fitted audio_ctx,
# and prints: file, window, C ms, voxloop ms, ratio voxloop/C.
#
# Env: VOXLOOP (binary; default the release build in ${CARGO_TARGET_DIR:-target}),
#      BUILD_DIR (default /tmp/whisper-bench-build), BUILD_TYPE (default Release),
#      THREADS (default 2, voxloop's asr_threads), FLASH_ATTN (C side, default 0
#      like whisper-rs), RUNS (voxloop runs timed after one warm-up; default 3).
# Run nothing else heavy meanwhile: the timings use both cores.
#
# Caveat when reading the ratio: the voxloop binary also links llama.cpp
# (llama-cpp-sys-2), whose static ggml libraries have the same symbol names as
# whisper.cpp's, and the linker takes ggml from llama.cpp. So voxloop runs
# whisper.cpp 1.8.3 on llama.cpp's ggml (GGML_LLAMAFILE=ON); a release cargo
# build compiles both as CMake Release (a debug one as RelWithDebInfo). The C side here uses whisper.cpp's
# own ggml as vendored.
set -euo pipefail
cd "$(dirname "$0")/.."

VOXLOOP=${VOXLOOP:-${CARGO_TARGET_DIR:-target}/release/voxloop}
BUILD_DIR=${BUILD_DIR:-/tmp/whisper-bench-build}
BUILD_TYPE=${BUILD_TYPE:-Release}
THREADS=${THREADS:-2}
FLASH_ATTN=${FLASH_ATTN:-0}
RUNS=${RUNS:-3}
MODEL=models/ggml-tiny.en.bin
FILES=(models/testdata/jfk.wav tests/data/q01_capital_france.wav)

# Only this script's settings reach voxloop.
for v in $(compgen -e | grep '^VOXLOOP_' || true); do unset "$v"; done

# --- build -------------------------------------------------------------------
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/whisper-rs-sys-0.15.0/whisper.cpp 2>/dev/null | head -n1)
[ -n "$src" ] || { echo "vendored whisper.cpp (whisper-rs-sys 0.15.0) not found; run cargo build first" >&2; exit 1; }

quiet() { local out; out=$("$@" 2>&1) || { echo "$out" >&2; return 1; }; }
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    quiet cmake -S "$src" -B "$BUILD_DIR" \
        -DCMAKE_BUILD_TYPE="$BUILD_TYPE" -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF \
        -DWHISPER_BUILD_TESTS=OFF -DWHISPER_BUILD_EXAMPLES=OFF -DGGML_OPENMP=OFF \
        -DGGML_METAL=OFF
fi
quiet cmake --build "$BUILD_DIR" -j 2

cli=$BUILD_DIR/whisper_cli
libs=("$BUILD_DIR/src/libwhisper.a" "$BUILD_DIR/ggml/src/libggml.a"
      "$BUILD_DIR/ggml/src/libggml-cpu.a" "$BUILD_DIR/ggml/src/libggml-base.a")
if [ ! -x "$cli" ] || [ benches/whisper_cli.c -nt "$cli" ] || [ "${libs[0]}" -nt "$cli" ]; then
    cc -O2 -std=c11 -D_POSIX_C_SOURCE=199309L -Wall -Wextra \
        -I"$src/include" -I"$src/ggml/include" benches/whisper_cli.c \
        "${libs[@]}" -lstdc++ -lm -lpthread -o "$cli"
fi

# --- measure -----------------------------------------------------------------
[ -x "$VOXLOOP" ] || { echo "$VOXLOOP missing; build voxloop first" >&2; exit 1; }
fit_cfg=$(mktemp) full_cfg=$(mktemp)
trap 'rm -f "$fit_cfg" "$full_cfg"' EXIT
printf '[inference]\nasr_threads = %d\n' "$THREADS" >"$fit_cfg"
printf '[inference]\nasr_threads = %d\nasr_fit_audio_ctx = false\n' "$THREADS" >"$full_cfg"

median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

# voxloop FILE CONFIG: median asr_ms of the runs after the first.
voxloop_ms() {
    local f=$1 cfg=$2
    local args=() i
    for ((i = 0; i <= RUNS; i++)); do args+=("$f"); done
    VOXLOOP_LOG=info RUST_BACKTRACE=0 \
        "$VOXLOOP" --config "$cfg" transcribe "${args[@]}" 2>&1 >/dev/null \
        | sed 's/\x1b\[[0-9;]*m//g' | grep -o 'asr_ms=[0-9]*' | cut -d= -f2 \
        | tail -n +2 | median
}

printf '%-24s %-6s %8s %11s %8s\n' file window "C ms" "voxloop ms" ratio
for f in "${FILES[@]}"; do
    samples=$(python3 -c 'import sys, wave; print(wave.open(sys.argv[1]).getnframes())' "$f")
    # voxloop's audio_ctx_for(): ceil(seconds * 50) + 384, at most 1500.
    fit=$(( (samples * 50 + 15999) / 16000 + 384 ))
    (( fit > 1500 )) && fit=1500
    for window in full $fit; do
        if [ "$window" = full ]; then
            c=$("$cli" "$MODEL" "$f" 0 "$THREADS" "$FLASH_ATTN" | sed -n 's/^ms=//p')
            v=$(voxloop_ms "$f" "$full_cfg")
        else
            c=$("$cli" "$MODEL" "$f" "$window" "$THREADS" "$FLASH_ATTN" | sed -n 's/^ms=//p')
            v=$(voxloop_ms "$f" "$fit_cfg")
        fi
        printf '%-24s %-6s %8s %11s %8s\n' "$(basename "$f")" "$window" "$c" "$v" \
            "$(awk -v v="$v" -v c="$c" 'BEGIN {printf "%.2f", v / c}')"
    done
done
