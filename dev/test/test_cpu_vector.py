#!/usr/bin/env python3
"""train_gpt2 uses the widest vectors this CPU has, whatever the compiler's tuning prefers.

The matmul's tile (train_gpt2.c, mm_tile) is written in AVX-512 and AVX2 intrinsics with a portable C
path; the Makefile adds -mprefer-vector-width=512 on AVX-512 targets for the loops left to the
compiler. On an AVX-512 machine whose compiler tuning prefers 256-bit vectors, a build without these
has no 512-bit instruction at all and runs at half speed; these cases fail on such a build:
  - the start-up line names the widest path the CPU supports (from /proc/cpuinfo);
  - mm_tile's inner loop is made of fused multiply-adds on the widest registers (objdump);
  - on AVX-512, the other loops use zmm registers too;
  - the intrinsics compute exactly the sums of the portable C path: the same gradient bits.
"""
import os
import re
import shutil

from harness import BUILD, Skip, Suite, ensure_tinyshakespeare, fixture, run, tail

suite = Suite(__file__)
PATHS = {"avx512": ("AVX-512", "zmm"), "avx2": ("AVX2", "ymm"), "portable": ("portable C", None)}


def cpu_flags():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def widest_path():
    flags = cpu_flags()
    if "avx512f" in flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "portable"


def train_args(ts, extra=()):
    return ["-e", "tiny", "-i", os.path.join(ts, "tiny_shakespeare_train.bin"), "-j", "", "-b", "4", "-t", "64",
            "-s", "0"] + list(extra)


@fixture
def disassembly():
    """objdump -d of ./train_gpt2: {function name: its instruction lines}."""
    if shutil.which("objdump") is None:
        raise Skip("objdump not found (Debian: apt install binutils)")
    rc, so, se = run(["objdump", "-d", "--no-show-raw-insn", "./train_gpt2"], timeout=120)
    if rc != 0:
        raise RuntimeError(f"objdump -d ./train_gpt2 failed: {tail(se)}")
    functions, name = {}, None
    for line in so.splitlines():
        m = re.match(r"^[0-9a-f]+ <([^>]+)>:$", line)
        if m:
            name = m.group(1)
            functions[name] = []
        elif name and "\t" in line:
            functions[name].append(line.split("\t", 1)[1])
    return functions


@suite.case
def startup_names_widest_path():
    """train_gpt2's start-up line names the widest vector path this CPU supports."""
    want = widest_path()
    rc, so, se = run(["./train_gpt2"] + train_args(ensure_tinyshakespeare(), ["-x", "0", "-v", "0"]))
    line = next((l for l in so.splitlines() if l.startswith("vector path:")), "")
    suite.check(rc == 0 and PATHS[want][0] in line, "the start-up line names the widest path",
                f"CPU: {want}; {line or 'no vector path line: ' + tail(se, 2)}")


@suite.case
def matmul_tile_fmas_on_widest_registers():
    """mm_tile's loop is fused multiply-adds on the widest registers (24 zmm with AVX-512, 12 ymm with AVX2)."""
    want = widest_path()
    reg = PATHS[want][1]
    if reg is None:
        raise Skip("this CPU has neither AVX-512 nor AVX2: the portable path has no register width to check")
    body = next((b for f, b in disassembly().items() if f.startswith("mm_tile") and b), None)
    if body is None:
        return suite.check(False, "mm_tile in the binary", "no mm_tile symbol (it is marked noinline)")
    fmas = [i for i in body if re.match(r"vfmadd\d+ps\s", i) and f"%{reg}" in i]
    want_n = 24 if reg == "zmm" else 12
    suite.check(len(fmas) >= want_n, f"mm_tile: at least {want_n} {reg} FMAs", f"{len(fmas)} vfmadd*ps on {reg}")


@suite.case
def other_loops_use_zmm():
    """On AVX-512, the loops the compiler vectorizes (outside mm_tile) use 512-bit registers too."""
    if widest_path() != "avx512":
        raise Skip("not an AVX-512 CPU")
    # arithmetic only: even a build tuned to 256-bit vectors zeroes memory with zmm stores
    arith = re.compile(r"v(fn?madd\d*|mul|add|sub|div|max|min)ps\s.*%zmm")
    n = sum(1 for f, body in disassembly().items() if not f.startswith("mm_tile") for i in body if arith.match(i))
    suite.check(n >= 20, "zmm arithmetic outside mm_tile (GELU, LayerNorm, classifier, ...)",
                f"{n} instructions (a build tuned to 256-bit vectors has 0)")


@suite.case
def intrinsics_same_bits_as_portable_c():
    """The intrinsics tile sums in the portable C path's order: -DMM_PORTABLE gives the same gradient bits."""
    if widest_path() == "portable":
        raise Skip("this CPU has no intrinsics path")
    work = os.path.join(BUILD, "cpu_vector")
    os.makedirs(work, exist_ok=True)
    portable = os.path.join(work, "train_gpt2_portable")
    # the same compiler and flags as the Makefile's build, plus MM_PORTABLE (and without MPI: one process)
    rc, so, se = run(["make", "-s", "--no-print-directory", "print-cflags"], timeout=60)
    # (the last line: make's detection notes come first)
    cflags = so.strip().splitlines()[-1].split() if rc == 0 and so.strip() else ["-O3", "-march=native"]
    rc, so, se = run([os.environ.get("CC", "gcc")] + cflags + ["-DMM_PORTABLE", "-o", portable, "train_gpt2.c", "-lm"], timeout=300)
    if rc != 0:
        return suite.check(False, "build with -DMM_PORTABLE", tail(se, 3))
    ts = ensure_tinyshakespeare()
    dumps = {}
    for name, binary in (("intrinsics", "./train_gpt2"), ("portable", portable)):
        dumps[name] = os.path.join(work, f"{name}.grads")
        rc, so, se = run([binary] + train_args(ts, ["-x", "2", "-v", "0", "-dump_grads", dumps[name]]),
                         env={"OMP_NUM_THREADS": "2"})
        if rc != 0:
            return suite.check(False, f"{name} run", tail(se, 2))
    a, b = (open(dumps[n], "rb").read() for n in ("intrinsics", "portable"))
    suite.check(len(a) > 0 and a == b, "2 windows' gradients: intrinsics = portable C, bit for bit",
                f"{len(a)} bytes each, {'identical' if a == b else 'different'}")


if __name__ == "__main__":
    suite.main()
