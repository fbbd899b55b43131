#!/usr/bin/env python3
"""A run told to stop saves itself (issue 35): SIGTERM or SIGUSR1 lets the window in progress finish,
every rank checkpoints that step, and the run exits with code 75 (76 without -o, nothing saved); -y 1 then
continues it to the bits of the run that never stopped (the model and every rank's state file, byte for
byte, and the log's lines but their times). train_gpt2 at P=1; under mpirun at P=2 with the signal sent to
one rank only, to every rank again and again (a signal during the checkpoint write must not interrupt
it), and to mpirun (which forwards SIGUSR1); the CUDA trainer on the CPU emulation.

The signal goes out once the log holds 2 lines, so the run is training; where it stops is what its
checkpoint and its log say, and the run that never stopped has the same flags and steps."""
import os
import re
import shutil
import signal
import subprocess
import time

from harness import BUILD, MPI_ENV, REPO, Skip, Suite, ensure_tinyshakespeare, fixture, fresh_dir, read_log, run, tail

suite = Suite(__file__)

EXIT_STOPPED, EXIT_STOPPED_UNSAVED = 75, 76   # llmc/args.h
STEPS = 20                                     # long enough that the signal lands in the middle
EMULATED = os.path.join(REPO, "build", "cpucuda", "train_gpt2cu")
ENV = dict(MPI_ENV, OMP_NUM_THREADS="1", CPUCUDA_THREADS="1")


def workdir(name):
    path = os.path.join(BUILD, "signal", name)
    fresh_dir(path)
    return path


def command(program, P, out, log, extra=()):
    """The run every case makes: tiny model, B=2, T=32, a checkpoint only at the end (-n past -x)."""
    train = os.path.join(ensure_tinyshakespeare(), "tiny_shakespeare_train.bin")
    launch = ["mpirun", "-np", str(P), "--oversubscribe"] if P > 1 else []
    args = ["-e", "tiny", "-i", train, "-j", "", "-b", "2", "-t", "32", "-s", "0", "-v", "0", "-x", str(STEPS),
            "-log", log] + (["-o", out, "-n", "1000"] if out else [])
    return launch + [program] + args + list(extra)


def need(program, P):
    if not os.path.exists(program):
        raise Skip(f"{os.path.relpath(program, REPO)} is not built (make {os.path.relpath(program, REPO)})")
    if P > 1 and shutil.which("mpirun") is None:
        raise Skip("mpirun not found (Debian: apt install openmpi-bin libopenmpi-dev)")


def uninterrupted(program, P, name):
    """The run that never stops: its directory and its log."""
    need(program, P)
    d = workdir(name)
    out, log = os.path.join(d, "out"), os.path.join(d, "log")
    rc, so, se = run(command(program, P, out, log), env=ENV, timeout=300)
    assert rc == 0, f"the uninterrupted run exits {rc}: {tail(se or so, 3)}"
    return out, log


@fixture
def reference_P1():
    return uninterrupted("./train_gpt2", 1, "reference_P1")


@fixture
def reference_P2():
    return uninterrupted("./train_gpt2", 2, "reference_P2")


@fixture
def reference_emulated():
    return uninterrupted(EMULATED, 1, "reference_emulated")


def start_training(cmd, d, log):
    """Starts cmd with its output in files and waits until the log holds 2 lines (2 windows trained)."""
    with open(os.path.join(d, "stdout"), "w") as stdout, open(os.path.join(d, "stderr"), "w") as stderr:
        p = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, **ENV), stdout=stdout, stderr=stderr)
    deadline = time.time() + 120
    while len(read_log(log)) < 2:
        if p.poll() is not None:
            raise AssertionError(f"the run ended (exit {p.returncode}) before its second window: "
                                 f"{tail(text(os.path.join(d, 'stderr')), 3)}")
        if time.time() > deadline:
            p.kill()
            raise AssertionError("no second window within 120 s")
        time.sleep(0.01)
    return p


def descendants(pid):
    """Every process below pid (mpirun's ranks, whatever launcher sits in between)."""
    children = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        except (ValueError, OSError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rank_pids(mpirun_pid, P):
    """{rank: pid} of the ranks under mpirun, from the rank Open MPI puts in each one's environment."""
    ranks = {}
    for pid in descendants(mpirun_pid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        except OSError:
            continue
        if b"OMPI_COMM_WORLD_RANK" in env:
            ranks[int(env[b"OMPI_COMM_WORLD_RANK"])] = pid
    assert sorted(ranks) == list(range(P)), f"found the pids of ranks {sorted(ranks)} under mpirun, expected 0..{P - 1}"
    return ranks


def send(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:  # already gone: it was told before, or has finished
            pass


def wait_stopped(p, pids, sig, storm):
    """Waits for the run to end; with storm, signals pids again every 20 ms until then."""
    deadline = time.time() + 120
    while p.poll() is None:
        if time.time() > deadline:
            p.kill()
            raise AssertionError("still running 120 s after the signal")
        if storm:
            send(pids, sig)
        time.sleep(0.02)
    return p.returncode


def checkpoint_steps(out):
    """{step: sorted file names} of the checkpoint files in out (temporary ones under their step too)."""
    steps = {}
    for name in os.listdir(out):
        m = re.match(r"(?:model|state|DONE)_(\d{8})", name)
        if m:
            steps.setdefault(int(m.group(1)), []).append(name)
    return {s: sorted(names) for s, names in steps.items()}


def without_times(log):
    return [{k: v for k, v in line.items() if k != "ms"} for line in read_log(log)]


def text(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def files_equal(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def stop_and_resume(name, program, P, sig, target, reference, storm=False):
    """Signals a run (target: "all" ranks, "rank1", or "mpirun"), checks that it stopped at one step with
    a complete checkpoint on every rank and the documented exit code, resumes it with -y 1 to the end
    and compares it with the run that never stopped."""
    need(program, P)
    ref_out, ref_log = reference()
    d = workdir(name)
    out, log = os.path.join(d, "out"), os.path.join(d, "log")
    cmd = command(program, P, out, log)
    p = start_training(cmd, d, log)
    ranks = rank_pids(p.pid, P) if P > 1 else {0: p.pid}
    pids = [p.pid] if target == "mpirun" else [ranks[1]] if target == "rank1" else list(ranks.values())
    send(pids, sig)
    rc = wait_stopped(p, pids, sig, storm)
    stdout, stderr = text(os.path.join(d, "stdout")), text(os.path.join(d, "stderr"))
    assert rc == EXIT_STOPPED, f"exit {rc}, expected {EXIT_STOPPED}: {tail(stderr or stdout, 3)}"

    steps = checkpoint_steps(out)
    assert len(steps) == 1, f"checkpoint files of {len(steps)} steps, expected one: {steps}"
    s = next(iter(steps))
    want = sorted([f"DONE_{s:08d}", f"model_{s:08d}.bin"] + [f"state_{s:08d}_{r:05d}.bin" for r in range(P)])
    assert steps[s] == want, f"step {s}: {steps[s]}, expected {want}"
    assert 2 <= s < STEPS, f"stopped at step {s}, expected between 2 and {STEPS - 1}"
    trained = [line["s"] for line in read_log(log) if "trl" in line]
    assert trained == list(range(s)), f"the log has the windows {trained}, expected 0..{s - 1}"
    who = signal.Signals(sig).name if target != "rank1" else "a signal to another rank"
    line = f"stopped after step {s}/{STEPS} on {who}: checkpoint of step {s}"
    assert line in stdout, f"no line '{line}...' in the output: {tail(stdout, 2)}"

    rc, so, se = run(cmd + ["-y", "1"], env=ENV, timeout=300)
    assert rc == 0 and f"resumed from step {s}" in so, f"the resumed run exits {rc}: {tail(se or so, 3)}"
    final = [f"model_{STEPS:08d}.bin"] + [f"state_{STEPS:08d}_{r:05d}.bin" for r in range(P)]
    differ = [f for f in final if not files_equal(os.path.join(out, f), os.path.join(ref_out, f))]
    assert not differ, f"stopped at {s} and resumed, these final files differ from the uninterrupted run's: {differ}"
    assert without_times(log) == without_times(ref_log), "the log (stopped + resumed) differs from the uninterrupted run's"
    return f"exit {EXIT_STOPPED} at step {s}, files {', '.join(want)}; resumed to step {STEPS}: " \
           f"model, {P} state file(s) and {len(read_log(log))} log lines identical to the uninterrupted run's"


@suite.case
def sigterm_P1():
    """train_gpt2: SIGTERM -> checkpoint, exit 75; -y 1 gives the uninterrupted run's bits"""
    return stop_and_resume("sigterm_P1", "./train_gpt2", 1, signal.SIGTERM, "all", reference_P1)


@suite.case
def sigusr1_P1():
    """train_gpt2: SIGUSR1 (Slurm's --signal=USR1@120) does the same"""
    return stop_and_resume("sigusr1_P1", "./train_gpt2", 1, signal.SIGUSR1, "all", reference_P1)


@suite.case
def no_output_dir():
    """without -o: stops at the window's end, says nothing was saved, exit 76"""
    need("./train_gpt2", 1)
    d = workdir("no_output_dir")
    log = os.path.join(d, "log")
    p = start_training(command("./train_gpt2", 1, None, log), d, log)
    send([p.pid], signal.SIGTERM)
    rc = wait_stopped(p, [p.pid], signal.SIGTERM, False)
    stdout = text(os.path.join(d, "stdout"))
    trained = len([line for line in read_log(log) if "trl" in line])
    line = f"stopped after step {trained}/{STEPS} on SIGTERM: no checkpoint written"
    assert rc == EXIT_STOPPED_UNSAVED and line in stdout, f"exit {rc}, expected {EXIT_STOPPED_UNSAVED} and '{line}': {tail(stdout, 2)}"
    return f"exit {rc} after step {trained}: {line}"


@suite.case
def sigterm_P2_one_rank():
    """mpirun P=2, SIGTERM to rank 1 only: both ranks checkpoint the same step, exit 75, resume exact"""
    return stop_and_resume("sigterm_P2_one_rank", "./train_gpt2", 2, signal.SIGTERM, "rank1", reference_P2)


@suite.case
def sigterm_P2_all_ranks_repeated():
    """mpirun P=2, SIGTERM to both ranks every 20 ms until they exit: the checkpoint is not interrupted"""
    return stop_and_resume("sigterm_P2_all", "./train_gpt2", 2, signal.SIGTERM, "all", reference_P2, storm=True)


@suite.case
def sigusr1_P2_to_mpirun():
    """mpirun P=2, SIGUSR1 to mpirun, which forwards it to every rank"""
    return stop_and_resume("sigusr1_P2_mpirun", "./train_gpt2", 2, signal.SIGUSR1, "mpirun", reference_P2)


@suite.case
def sigterm_emulated_cuda():
    """build/cpucuda/train_gpt2cu (the CUDA trainer on the CPU emulation): SIGTERM, exit 75, resume exact"""
    return stop_and_resume("sigterm_emulated", EMULATED, 1, signal.SIGTERM, "all", reference_emulated)


if __name__ == "__main__":
    suite.main()
