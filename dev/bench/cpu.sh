#!/usr/bin/env bash
# CPU speed: train_gpt2 (C) against train_gpt2.py (PyTorch) on the same model, batch and threads.
#
#   make train_gpt2 && dev/bench/cpu.sh
#
# For each preset (tiny, d12) at B=4 T=64 K=1 it runs C, Py, C, Py ... (ROUNDS rounds, alternating so
# both sides see the same background load), takes the median step time over all steps but the first
# of each run, and prints ms/step, tokens/s, peak RSS and the ratio C/Py of tokens/s, and the C step's
# GFLOP/s as a fraction of the machine's sgemm peak. Before that it says which BLAS PyTorch really calls
# (the one mapped into the process, not the one it was built against), the thread count of each side,
# the CPU model, the C binary's vector path and the sgemm peak (numpy, same threads). Then it builds dev/bench/profile_cpu.c and prints the
# per-layer table for d12. Environment knobs (defaults in brackets):
#   THREADS [nproc]  PRESETS ["tiny d12"]  ROUNDS [2]  STEPS_tiny [20]  STEPS_d12 [8]
#   PROFILE [1]: 0 skips the per-layer profile;  C_BIN [./train_gpt2]: the C trainer to time
#   C_BASELINE [unset]: another train_gpt2 binary (e.g. built from an older commit), timed as side
#     "C0" in the same rounds, for a before/after ratio measured side by side
#   PY_OPENBLAS_CORETYPE [unset]: OpenBLAS kernel for PyTorch. By default the Python runs drop any
#     OPENBLAS_CORETYPE from the environment so OpenBLAS picks its best kernels for this CPU (a
#     forced older core, e.g. Haswell on an AVX-512 machine, would slow PyTorch down); set it to force one.
set -u
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-$(nproc)}
PRESETS=${PRESETS:-"tiny d12"}
ROUNDS=${ROUNDS:-2}
PROFILE=${PROFILE:-1}
C_BIN=${C_BIN:-./train_gpt2}
B=4
T=64
PY=python3
if /usr/bin/python3 -c 'import torch, numpy' 2>/dev/null; then PY=/usr/bin/python3; fi
if ! $PY -c 'import torch, numpy' 2>/dev/null; then echo "cpu.sh: error: no python3 with torch and numpy"; exit 1; fi
[ -x "$C_BIN" ] || { echo "cpu.sh: error: $C_BIN missing: run 'make train_gpt2' first"; exit 1; }
[ -z "${C_BASELINE:-}" ] || [ -x "$C_BASELINE" ] || { echo "cpu.sh: error: C_BASELINE=$C_BASELINE is not executable"; exit 1; }
LOG=build/bench
# the environment of every PyTorch process: same thread count, OpenBLAS on its own choice of kernel
if [ -n "${PY_OPENBLAS_CORETYPE:-}" ]; then PY_ENV=(env OPENBLAS_CORETYPE="$PY_OPENBLAS_CORETYPE"); else PY_ENV=(env -u OPENBLAS_CORETYPE); fi
PY_ENV+=(OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS")
mkdir -p "$LOG"

# ---- data: tinyshakespeare shards (offline from ../shared when there, else downloaded)
DATA=dev/data/tinyshakespeare
if [ ! -f "$DATA/tiny_shakespeare_train.bin" ]; then
    INPUT=()
    [ -f ../shared/data/tinyshakespeare/input.txt ] && INPUT=(--input ../shared/data/tinyshakespeare/input.txt)
    $PY dev/data/tinyshakespeare.py "${INPUT[@]}" --out_dir "$DATA" || { echo "cpu.sh: error: data step failed"; exit 1; }
fi
TRAIN_BIN=$DATA/tiny_shakespeare_train.bin

# ---- peak RSS: GNU time -v (installed if missing), else a Python wrapper reading getrusage
if [ ! -x /usr/bin/time ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing GNU time (apt) for peak RSS"
    (apt-get install -y time || (apt-get update && apt-get install -y time)) >/dev/null 2>&1
fi
# measure OUTFILE CMD...: runs CMD with stdout+stderr into OUTFILE and appends "peak_rss_kb=N"
measure() {
    local out=$1; shift
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -v "$@" >"$out" 2>&1
        local rc=$?
        local kb
        kb=$(grep "Maximum resident set size" "$out" | awk '{print $NF}')
        echo "peak_rss_kb=$kb" >>"$out"
        return $rc
    fi
    $PY - "$@" >"$out" 2>&1 <<'EOF'
import resource, subprocess, sys
rc = subprocess.call(sys.argv[1:])
print(f"peak_rss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
sys.exit(rc)
EOF
}

# ---- which BLAS PyTorch calls, and its thread count
blas_report() {
    "${PY_ENV[@]}" $PY - "$THREADS" <<'EOF'
import os, re, sys, torch
n = int(sys.argv[1])
torch.set_num_threads(n)
a = torch.randn(512, 512)
(a @ a).sum().item()                     # make sure the BLAS library is loaded and used
info = re.search(r"BLAS_INFO=([^,]*)", torch.__config__.show())
print(f"torch {torch.__version__}: BLAS_INFO={info.group(1) if info else '?'}, "
      f"torch.get_num_threads()={torch.get_num_threads()}, "
      f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(auto)')}")
libs = sorted(set(re.findall(r"(/\S*(?:blas|lapack|mkl|gomp|iomp)\S*\.so[.\d]*)\s*$", open("/proc/self/maps").read(), re.M)))
reference = False
for lib in libs:
    real = os.path.realpath(lib)
    print(f"  mapped: {lib} -> {real}")
    if re.search(r"libblas\.so", os.path.basename(lib)) and "openblas" not in real and "mkl" not in real:
        reference = True
try:
    import ctypes
    cfg = ctypes.CDLL("libopenblas.so.0").openblas_get_config
    cfg.restype = ctypes.c_char_p
    core = ctypes.CDLL("libopenblas.so.0").openblas_get_corename
    core.restype = ctypes.c_char_p
    print(f"  OpenBLAS: {cfg().decode()} core {core().decode()}")
except Exception:
    pass
print("BLAS_KIND=" + ("reference" if reference else "optimized"))
EOF
}
echo "== PyTorch BLAS"
REPORT=$(blas_report)
echo "$REPORT" | grep -v '^BLAS_KIND='
if echo "$REPORT" | grep -q '^BLAS_KIND=reference'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "PyTorch calls the reference BLAS: installing libopenblas0-pthread (apt)"
        (apt-get install -y libopenblas0-pthread || (apt-get update && apt-get install -y libopenblas0-pthread)) >/dev/null 2>&1
        REPORT=$(blas_report)
        echo "$REPORT" | grep -v '^BLAS_KIND='
    fi
    if echo "$REPORT" | grep -q '^BLAS_KIND=reference'; then
        echo "######################################################################################"
        echo "# WARNING: PyTorch runs on the REFERENCE BLAS (netlib), not OpenBLAS: the comparison  #"
        echo "# below is UNFAIR to PyTorch. Install libopenblas0-pthread (Debian) and run again.    #"
        echo "######################################################################################"
    fi
fi
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== threads: C OMP_NUM_THREADS=$THREADS, Py --threads $THREADS (and OMP/OPENBLAS_NUM_THREADS=$THREADS)"
if [ -n "${OPENBLAS_CORETYPE:-}" ] && [ -z "${PY_OPENBLAS_CORETYPE:-}" ]; then
    echo "   (the environment has OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE; the Python runs drop it, see PY_OPENBLAS_CORETYPE)"
fi
# What the C binary runs (its start-up line), and the machine's fp32 matmul ceiling: OpenBLAS's sgemm
# through numpy at 3072^3 on the same threads, best of 3 (every figure below is read against it).
VECTOR_PATH=$("$C_BIN" -e tiny -i "$TRAIN_BIN" -j "" -x 0 -s 0 -v 0 2>/dev/null | grep -m1 '^vector path:' | cut -d: -f2- | sed 's/^ //')
echo "== C vector path: ${VECTOR_PATH:-unknown (no 'vector path:' line)}"
SGEMM_GFLOPS=$("${PY_ENV[@]}" $PY -c '
import time
import numpy as np
n = 3072
a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
a @ b
times = []
for _ in range(3):
    t0 = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - t0)
print(f"{2 * n ** 3 / min(times) / 1e9:.0f}")
')
echo "== sgemm peak (numpy + OpenBLAS, 3072^3, $THREADS threads): ${SGEMM_GFLOPS:-?} GFLOP/s"

# step_ms FILE: the step time (ms) of every step line but the first, one per line; the time is the
# first "| N ms" field (the C lines go on with "(comm N ms)")
step_ms() {
    grep -E '^step +[0-9]+/' "$1" | tail -n +2 | awk -F'|' '{for (i = 2; i <= NF; i++) if ($i ~ /^ *[0-9.]+ ms/) {split($i, w, " "); print w[1]; break}}'
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# run_side SIDE PRESET STEPS LOG: one training run of C (./train_gpt2), C0 (the baseline binary) or Py
run_side() {
    local side=$1 preset=$2 steps=$3 log=$4
    case $side in
        C|C0) local bin=$C_BIN; [ "$side" = C0 ] && bin=$C_BASELINE
              OMP_NUM_THREADS=$THREADS measure "$log" "$bin" -e "$preset" -b $B -t $T -k 1 -x "$steps" \
                  -v 0 -s 0 -j "" -i "$TRAIN_BIN" ;;
        Py)   measure "$log" "${PY_ENV[@]}" $PY train_gpt2.py --model "$preset" \
                  --B $B --T $T --K 1 --num_iterations "$steps" --threads "$THREADS" --input_bin "$TRAIN_BIN" ;;
    esac || { echo "$side run failed: $log"; tail -5 "$log"; exit 1; }
}

SIDES="C Py"
[ -n "${C_BASELINE:-}" ] && SIDES="C0 C Py"
printf "\n%-6s %-4s %6s %10s %10s %10s  %s\n" preset side steps median_ms tok_per_s peak_MB "median of each round (ms)"
for preset in $PRESETS; do
    var=STEPS_$preset
    STEPS=${!var:-$([ "$preset" = tiny ] && echo 20 || echo 8)}
    declare -A tok rss rounds
    for side in $SIDES; do : >"$LOG/$preset.$side.ms"; rss[$side]=0; rounds[$side]=""; done
    for r in $(seq 1 "$ROUNDS"); do
        for side in $SIDES; do  # alternating: every side sees the same background load, round by round
            log=$LOG/$preset.$side.$r.log
            run_side "$side" "$preset" "$STEPS" "$log"
            step_ms "$log" >>"$LOG/$preset.$side.ms"
            rounds[$side]="${rounds[$side]} $(step_ms "$log" | median)"
            kb=$(grep -oE 'peak_rss_kb=[0-9]+' "$log" | cut -d= -f2)
            [ "${kb:-0}" -gt "${rss[$side]}" ] && rss[$side]=$kb
        done
    done
    for side in $SIDES; do
        ms=$(median <"$LOG/$preset.$side.ms")
        tok[$side]=$(awk -v m="$ms" -v n=$((B * T)) 'BEGIN {printf "%.0f", n * 1000 / m}')
        case $side in
            Py) threads="torch threads: $THREADS" ;;
            *)  threads="OpenMP threads: $(grep -oE 'threads: [0-9]+ OpenMP' "$LOG/$preset.$side.1.log" | grep -oE '[0-9]+')" ;;
        esac
        printf "%-6s %-4s %6s %10.1f %10s %10.0f %s (%s)\n" "$preset" "$side" "$(wc -l <"$LOG/$preset.$side.ms")" "$ms" \
            "${tok[$side]}" "$(awk -v k="${rss[$side]}" 'BEGIN {print k / 1024}')" "${rounds[$side]}" "$threads"
    done
    awk -v a="${tok[C]}" -v b="${tok[Py]}" -v p="$preset" -v rc="${rss[C]}" -v rp="${rss[Py]}" \
        'BEGIN {printf "%-6s ratio C/Py: tokens/s %.2fx, peak RSS %.2fx\n", p, a / b, rc / rp}'
    # the whole step's rate as 6 flops per parameter per token (forward 2, backward 4), against sgemm
    params=$(grep -m1 -oE '[0-9]+ parameters' "$LOG/$preset.C.1.log" | cut -d' ' -f1)
    awk -v t="${tok[C]}" -v n="${params:-0}" -v peak="${SGEMM_GFLOPS:-0}" -v p="$preset" \
        'BEGIN {g = 6 * n * t / 1e9; printf "%-6s C step: %.1f GFLOP/s (6N per token) = %.0f%% of the sgemm peak\n", p, g, (peak > 0 ? 100 * g / peak : 0)}'
    [ -n "${C_BASELINE:-}" ] && awk -v a="${tok[C]}" -v b="${tok[C0]}" -v p="$preset" \
        'BEGIN {printf "%-6s ratio C/C0 (this build over the baseline): tokens/s %.2fx\n", p, a / b}'
    unset tok rss rounds
done
echo "(logs in $LOG/; load average now $(cut -d' ' -f1-3 /proc/loadavg))"

# ---- per-layer profile of the C trainer (d12), with the fast-vs-reference checks
if [ "$PROFILE" = 1 ] && [ -f dev/bench/profile_cpu.c ]; then
    echo
    echo "== dev/bench/profile_cpu.c (d12, B=$B T=$T, $THREADS threads)"
    ${CC:-gcc} $(make -s --no-print-directory print-cflags 2>/dev/null | tail -1) -I. -o "$LOG/profile_cpu" dev/bench/profile_cpu.c -lm \
        && OMP_NUM_THREADS=$THREADS "$LOG/profile_cpu" -e d12 -b $B -t $T
fi
