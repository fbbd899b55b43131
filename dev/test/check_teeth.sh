#!/usr/bin/env bash
# Shows that `make check` has teeth: three deliberate breakages, each applied to a scratch copy of the
# committed tree (HEAD), must each make `make check` fail. Nothing here changes the working tree.
#
#   bash dev/test/check_teeth.sh            all three (about 3 x 6 minutes on 2 cores)
#   bash dev/test/check_teeth.sh window     one of them: cpu_backward, cuda_kernel, window
#
# The breakages, by hand (apply one, run `make check`, see it fail, `git checkout` the file):
#   cpu_backward  train_gpt2.c, GELU backward: the derivative of x^3 taken as 2x^2 instead of 3x^2
#   cuda_kernel   llmc/cuda_gelu.cuh, the 128-bit GELU backward kernel: its gradient 5% too large
#   window        llmc/window.h: the window divided by this rank's valid count times P, not by the
#                 global count N (the classic bias when ranks see different numbers of valid targets)
# The scratch copy reuses this tree's build/ (copied, sources dated back), so only what a breakage
# touches is rebuilt.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
SCRATCH=${TMPDIR:-/tmp}/gpt2_window_teeth

declare -A FILE PATTERN REPLACEMENT
FILE[cpu_backward]=train_gpt2.c
PATTERN[cpu_backward]='float du = GELU_SCALE \* (1.0f + 3.0f \* 0.044715f \* x \* x);'
REPLACEMENT[cpu_backward]='float du = GELU_SCALE * (1.0f + 2.0f * 0.044715f * x * x);'
FILE[cuda_kernel]=llmc/cuda_gelu.cuh
PATTERN[cuda_kernel]='d.v\[k\] = from_float<floatX>(gelu_tanh_grad(to_float(x.v\[k\])) \* to_float(g.v\[k\]));'
REPLACEMENT[cuda_kernel]='d.v[k] = from_float<floatX>(1.05f * gelu_tanh_grad(to_float(x.v[k])) * to_float(g.v[k]));'
FILE[window]=llmc/window.h
PATTERN[window]='double N = scalars\[1\];'
REPLACEMENT[window]='double N = valid * c->world;'

names=("$@")
[ ${#names[@]} -eq 0 ] && names=(cpu_backward cuda_kernel window)
status=0
for name in "${names[@]}"; do
  if [ -z "${FILE[$name]:-}" ]; then echo "error: unknown breakage '$name' (cpu_backward, cuda_kernel, window)"; exit 2; fi
  rm -rf "$SCRATCH"; mkdir -p "$SCRATCH"
  git -C "$REPO" archive HEAD | tar -x -C "$SCRATCH"
  find "$SCRATCH" -type f -exec touch -d '2000-01-01' {} +   # older than the copied build: no rebuild
  [ -d "$REPO/build" ] && cp -a "$REPO/build" "$SCRATCH/build"
  for p in train_gpt2 test_gpt2; do [ -x "$REPO/$p" ] && cp -p "$REPO/$p" "$SCRATCH/$p"; done
  f=$SCRATCH/${FILE[$name]}
  before=$(md5sum < "$f")
  sed -i "s|${PATTERN[$name]}|${REPLACEMENT[$name]}|g" "$f"
  if [ "$(md5sum < "$f")" = "$before" ]; then
    echo "FAIL teeth $name: the breakage no longer applies to ${FILE[$name]} (update its pattern)"; status=1; continue
  fi
  log=$REPO/build/teeth_$name.log
  echo "=== breakage $name (${FILE[$name]}): make check, log in ${log#$REPO/}"
  t0=$(date +%s)
  (cd "$SCRATCH" && make check) > "$log" 2>&1
  rc=$?
  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
  failed=$(sed -n '/^failed checks:/,/^rerun them alone:/p' "$log" | grep -v '^failed checks:\|^rerun them alone:' | head -8)
  if [ $rc -ne 0 ] && [ -n "$summary" ]; then
    echo "PASS teeth $name: make check fails ($summary, $(( $(date +%s) - t0 )) s); it caught:"
    echo "$failed" | sed 's/^/     /'
  else
    echo "FAIL teeth $name: make check exit $rc, '${summary:-no summary line}': the breakage went unseen"; status=1
  fi
done
rm -rf "$SCRATCH"
exit $status
