#!/usr/bin/env python3
"""Hostile input, second round (issue 21): every reproducer of the campaign, at the CLI.

Each case must end cleanly: exit 2 with one line on stderr (or the right answer), no signal but
the one a user sent, within seconds, within the memory budget, earlier outputs intact. The
memory cases set a budget through HANDGRAD_MAX_MEMORY, so they run the same on any machine and
without root.
"""
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyhelpers import fashion_dir  # noqa: E402

HANDGRAD = sys.argv[1]
failures = []


def run(args, want_rc=2, env=None, timeout=60, want_in_err=None, max_seconds=None):
    t0 = time.time()
    try:
        p = subprocess.run([HANDGRAD] + args, capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, **(env or {})))
    except subprocess.TimeoutExpired:
        print(f"FAIL still running after {timeout} s: {' '.join(args)[:100]}")
        failures.append((args, "timeout", ""))
        return None
    took = time.time() - t0
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    ok = p.returncode == want_rc and (want_rc == 0 or len(lines) == 1)
    if want_in_err and not any(want_in_err in l for l in lines):
        ok = False
    if max_seconds and took > max_seconds:
        ok = False
    print(f"{'ok  ' if ok else 'FAIL'} rc={p.returncode:3d} {took:5.1f}s {' '.join(args)[:100]}\n"
          f"       {lines[0][:160] if lines else ''}")
    if not ok:
        failures.append((args, p.returncode, p.stderr[-1000:]))
    return p


def fnv1a(name):
    h = 1469598103934665603
    for c in name.encode():
        h = ((h ^ c) * 1099511628211) & (2 ** 64 - 1)
    return h


def running(pid, grace=3.0):
    """Whether process `pid` still runs after `grace` seconds (a zombie waiting for its reaper and a
    process that is gone do not count)."""
    t0 = time.time()
    while time.time() - t0 < grace:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return False
        except (FileNotFoundError, ProcessLookupError):
            return False
        time.sleep(0.05)
    return True


def interrupted(args, marker, env, what, sig=signal.SIGINT, whole_group=True):
    """Starts handgrad, waits for `marker` (the fake python's pid: its sign of life) and sends `sig`: to the
    whole process group as a terminal's Ctrl-C does, or to handgrad alone as timeout(1) or a CI
    runner does. handgrad must end by that signal, and its helper with it: a helper left running
    would hold handgrad's stdout open, and the wait for it to close would time out."""
    p = subprocess.Popen([HANDGRAD] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, **env), start_new_session=True)
    t0 = time.time()
    while not os.path.exists(marker) and time.time() - t0 < 60 and p.poll() is None:
        time.sleep(0.05)
    if whole_group:
        os.killpg(p.pid, sig)
    else:
        p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # handgrad, or the helper it left behind
        out, err = p.communicate()
        out += "\n(its output stayed open for 20 s after the signal: a helper outlived handgrad)"
    helper_alive = False
    if os.path.exists(marker):  # the helper's pid (the probe's output goes to /dev/null, not to us)
        helper = int(open(marker).read())
        helper_alive = running(helper)
        if helper_alive:
            os.kill(helper, signal.SIGKILL)
    if helper_alive:
        out += "\n(the helper was still running after handgrad ended)"
    took = time.time() - t0
    ok = p.returncode == -sig and "all checks passed" not in out and took < 60 and not helper_alive \
        and "outlived" not in out
    print(f"{'ok  ' if ok else 'FAIL'} rc={p.returncode:3d} {signal.Signals(sig).name} during {what}")
    if not ok:
        failures.append((what, p.returncode, out[-500:] + err[-500:]))
    if os.path.exists(marker):
        os.remove(marker)


with tempfile.TemporaryDirectory() as d:
    def path(*names):
        return os.path.join(d, *names)

    np.save(path("a.npy"), np.ones((3, 4), np.float32))
    np.save(path("b.npy"), np.ones((4, 5), np.float32))
    einsum_ok = ["einsum", "ij,jk->ik", path("a.npy"), path("b.npy")]

    # 3. .pth reading is linear in keys and zip entries (was quadratic: 60,000 tensors took 219 s),
    #    and tensors sharing one large storage are not copied per tensor.
    try:
        import torch
        torch.save({f"t{i}": torch.full((2,), float(i)) for i in range(60000)}, path("many.pth"))
        big = torch.zeros(250000)
        torch.save({f"v{i}": big[i:i + 1] for i in range(30000)}, path("shared.pth"))
        run(["inspect", path("many.pth")], want_rc=0, max_seconds=15)
        run(["inspect", path("shared.pth")], want_rc=0, max_seconds=15)
        # convert keeps the order of empty tensors (they share an offset in safetensors).
        torch.save({"z": torch.zeros(0), "a": torch.ones(2), "m": torch.zeros(0, 3), "b": torch.zeros(0)},
                   path("empties.pth"))
        run(["convert", path("empties.pth"), path("empties.st")], want_rc=0)
        listed = subprocess.run([HANDGRAD, "inspect", "--json", path("empties.st")], capture_output=True,
                                text=True).stdout
        names = [e["name"] for e in json.loads(listed)]
        if names != ["z", "a", "m", "b"]:
            failures.append(("convert reordered empty tensors", names, ""))
    except ImportError:
        print("note: no torch: the .pth cases are skipped")

    # 4. Ctrl-C while a helper runs (plots, the matplotlib probe) ends handgrad by SIGINT, never
    #    "all checks passed". A fake python stands in for matplotlib's: it says it started, then
    #    sleeps (as one process, as python is). A signal to handgrad alone (timeout(1), `kill PID`)
    #    is passed on to the helper: none outlives handgrad.
    marker = path("plot_started")
    fake = path("fake_python")
    with open(fake, "w") as f:
        f.write(f"#!/bin/sh\nif [ \"$1\" = -c ] && [ -z \"$HG_SLOW_PROBE\" ]; then exit 0; fi\n"
                f"echo $$ > {marker}.tmp && mv {marker}.tmp {marker}\nexec sleep 30\n")
    os.chmod(fake, 0o755)
    env = {"HANDGRAD_PYTHON": fake}
    interrupted(["mlp", "--iters", "200", "--out-dir", path("q2")], marker, env, "mlp's plot")
    interrupted(["report", "--quick", "--only", "q4", "--out-dir", path("rep_int")], marker, env, "the report's plot")
    interrupted(["mlp", "--iters", "200", "--out-dir", path("q2")], marker, dict(env, HG_SLOW_PROBE="1"),
                "the matplotlib probe")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        interrupted(["mlp", "--iters", "200", "--out-dir", path("q2")], marker, env,
                    "mlp's plot, sent to handgrad alone", sig=sig, whole_group=False)
    interrupted(["mlp", "--iters", "200", "--out-dir", path("q2")], marker, dict(env, HG_SLOW_PROBE="1"),
                "the matplotlib probe, sent to handgrad alone", sig=signal.SIGTERM, whole_group=False)

    # A plot stopped mid-save (Ctrl-C, SIGTERM passed on by handgrad) leaves no temporary file,
    # prints no traceback, and ends by the signal. Needs matplotlib: Debian's python3 has it.
    plots_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plots")
    stopper = ("import os, signal, sys\n"
               f"sys.path.insert(0, {plots_dir!r})\n"
               "from plot_common import atomic_pdf\n"
               "with atomic_pdf(sys.argv[1]) as tmp:\n"
               "    open(tmp, 'w').write('half a pdf')\n"
               "    os.kill(os.getpid(), int(sys.argv[2]))\n"
               "    import time; time.sleep(5)\n")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        out_pdf = path(f"stopped_{sig}.pdf")
        p = subprocess.run(["/usr/bin/python3", "-c", stopper, out_pdf, str(int(sig))], capture_output=True, text=True,
                           timeout=60)
        if "No module named 'matplotlib'" in p.stderr:
            print("note: no matplotlib: the stopped-plot case is skipped")
            break
        left = [f for f in os.listdir(d) if f.startswith(f"stopped_{sig}")]
        ok = p.returncode == -sig and not left and not p.stderr.strip()
        print(f"{'ok  ' if ok else 'FAIL'} rc={p.returncode:3d} a plot stopped by {signal.Signals(sig).name} mid-save")
        if not ok:
            failures.append((f"plot stopped by {sig}", p.returncode, f"left {left}; stderr {p.stderr[-300:]}"))

    # A helper that wraps python without exec (a shell around it): what it started is stopped too.
    wrapper = path("fake_wrapper")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nif [ \"$1\" = -c ]; then exit 0; fi\n"
                f"sh -c 'echo $$ > {marker}.tmp && mv {marker}.tmp {marker} && exec sleep 30' &\nwait\n")
    os.chmod(wrapper, 0o755)
    interrupted(["mlp", "--iters", "200", "--out-dir", path("q2")], marker, {"HANDGRAD_PYTHON": wrapper},
                "a wrapper's plot, sent to handgrad alone", sig=signal.SIGTERM, whole_group=False)

    # 5. Outputs that are not regular files: written through or refused, never replaced.
    run(einsum_ok + ["-o", "/dev/null"], want_rc=0)
    if not stat.S_ISCHR(os.stat("/dev/null").st_mode):
        failures.append(("/dev/null was replaced", "", ""))
    os.symlink("target.npy", path("link.npy"))
    run(einsum_ok + ["-o", path("link.npy")], want_rc=0)
    if not os.path.islink(path("link.npy")) or np.load(path("target.npy")).shape != (3, 5):
        failures.append(("the symbolic link was replaced or its target not written", "", ""))
    os.mkfifo(path("fifo"))
    got = []
    reader = threading.Thread(target=lambda: got.append(open(path("fifo"), "rb").read()))
    reader.start()
    run(einsum_ok + ["-o", path("fifo")], want_rc=0)
    reader.join(10)
    if not stat.S_ISFIFO(os.stat(path("fifo")).st_mode) or not got or not got[0].startswith(b"\x93NUMPY"):
        failures.append(("the FIFO was replaced or not written through", "", ""))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path("sock"))
    run(einsum_ok + ["-o", path("sock")], want_in_err="not a regular file")
    run(einsum_ok + ["-o", d], want_in_err="is a folder")

    # A plot that fails (here: its PDF's name is taken by a folder) is not among the files the
    # command says it wrote; every file it names exists.
    os.makedirs(path("q2_noplot", "question2_result.pdf"))
    p = run(["mlp", "--iters", "200", "--out-dir", path("q2_noplot")], want_rc=0)
    wrote = [l for l in p.stdout.splitlines() if l.startswith("wrote ")]
    named = wrote[0][len("wrote "):].split(", ") if wrote else []
    if not named or any("question2_result.pdf" in f or not os.path.isfile(f) for f in named) \
            or not any(f.endswith("Q2_output.txt") for f in named):
        failures.append(("mlp with a failed plot: the 'wrote' line", wrote, p.stderr[-500:]))

    # 6 and 10. A bad output folder or file is found before the work, with exit 2.
    open(path("plainfile"), "w").write("x")
    blocked = path("plainfile", "sub")
    run(["mlp", "--iters", "100000", "--out-dir", blocked], max_seconds=5)
    run(["mlp", "--iters", "100", "--save-weights", blocked], max_seconds=5)
    run(["report", "--out-dir", blocked], max_seconds=5)
    q3 = ["transfer", "train", "--weights", "none", "--no-plot", "--no-eval"]
    run(q3 + ["--out-dir", blocked], max_seconds=5)
    run(q3 + ["--out-dir", path("q3"), "--dump-branches", blocked, "--max-steps", "2"], max_seconds=5)
    run(q3 + ["--out-dir", path("q3"), "--save-checkpoint", path("plainfile", "ck.st")], max_seconds=5)
    run(q3 + ["--out-dir", path("q3"), "--save-momentum", blocked + "/m.st"],
        max_seconds=5)
    run(["transfer", "eval", "--checkpoint", path("a.npy"), "--dump-logits", blocked + "/l.npy"], max_seconds=5)
    run(["convert", path("a.npy"), blocked + "/x.st"], max_seconds=5)

    # 7. The memory budget: a clean refusal naming the size and the budget, not the OOM killer.
    np.save(path("e1.npy"), np.zeros((65536, 0), np.float32))
    np.save(path("e2.npy"), np.zeros((0, 65536), np.float32))
    small = {"HANDGRAD_MAX_MEMORY": "256M"}
    run(["einsum", "ab,bc->ac", path("e1.npy"), path("e2.npy"), "-o", path("huge.npy")], env=small,
        want_in_err="memory budget of 256.0 MiB", max_seconds=5)
    if os.path.exists(path("huge.npy")):
        failures.append(("a refused einsum left an output", "", ""))
    run(["einsum", "ab,bc->ac", path("e1.npy"), path("e2.npy"), "-o", path("huge.npy"), "--max-memory", "1G"],
        want_in_err="memory budget of 1.0 GiB", max_seconds=5)
    run(["mlp", "--iters", "2147483647", "--no-plot", "--out-dir", path("q2")], env=small,
        want_in_err="memory budget", max_seconds=5)
    run(["mlp", "--max-memory", "12X"], want_in_err="is not a size")
    import gzip
    one = path("one_big_image")
    os.makedirs(one)
    for name, blob in (("train-images-idx3-ubyte.gz", struct.pack(">IIII", 2051, 1, 4096, 4096) + bytes(4096 * 4096)),
                       ("train-labels-idx1-ubyte.gz", struct.pack(">II", 2049, 1) + b"\x01"),
                       ("t10k-images-idx3-ubyte.gz", struct.pack(">IIII", 2051, 1, 4096, 4096) + bytes(4096 * 4096)),
                       ("t10k-labels-idx1-ubyte.gz", struct.pack(">II", 2049, 1) + b"\x01")):
        with gzip.open(os.path.join(one, name), "wb") as f:
            f.write(blob)
    run(q3 + ["--out-dir", path("q3"), "--data-dir", one, "--max-steps", "1"], env={"HANDGRAD_MAX_MEMORY": "2G"},
        want_in_err="memory budget", max_seconds=30)

    # 8. Epochs whose step count overflows are refused, not trained for 0 steps.
    run(q3 + ["--out-dir", path("q3"), "--epochs", "9223372036854775807"], want_in_err="--epochs", max_seconds=10)

    # 11. Sizes whose products would overflow int64 are refused before they are formed.
    run(["mlp", "--n", str(2 ** 62), "--d", "4", "--iters", "10", "--no-plot", "--out-dir", path("q2")],
        want_in_err="problem too large")
    run(q3 + ["--out-dir", path("q3"), "--batch-size", str(2 ** 40)], want_in_err="--batch-size")

    # 9. An integer conv1.weight under --weights: exit 2 naming it.
    hdr = json.dumps({"conv1.weight": {"dtype": "I64", "shape": [64, 3, 7, 7], "data_offsets": [0, 75264]}}).encode()
    with open(path("int_conv1.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hdr)) + hdr + bytes(75264))
    if fashion_dir():
        run(["transfer", "train", "--weights", path("int_conv1.safetensors"), "--no-plot", "--no-eval",
             "--max-steps", "1", "--out-dir", path("q3")], want_in_err="conv1.weight is int64", max_seconds=30)

    # 12. Temporaries: a user's file that looks like an old-style temporary is left alone, ours
    #     (a dead pid) is cleaned up; a 250-byte output name is fine; stale files stay out of the zip.
    q2 = path("q2_tmp")
    os.makedirs(q2)
    users = os.path.join(q2, "Q2_output.txt.tmp.4194301")
    ours = os.path.join(q2, f".handgrad-{fnv1a('Q2_output.txt'):016x}.4194301.tmp")
    open(users, "w").write("mine")
    open(ours, "w").write("half a file")
    run(["mlp", "--iters", "200", "--no-plot", "--n", "20", "--d", "4", "--h", "4", "--out-dir", q2], want_rc=0)
    if not os.path.exists(users) or os.path.exists(ours):
        failures.append(("temporaries", os.listdir(q2), ""))
    long_name = path("x" * 246 + ".npy")
    run(einsum_ok + ["-o", long_name], want_rc=0)
    rep = path("rep")
    os.makedirs(rep)
    open(os.path.join(rep, "question5.pdf"), "w").write("an earlier run's")
    old = time.time() - 3600
    os.utime(os.path.join(rep, "question5.pdf"), (old, old))
    run(["report", "--quick", "--only", "q1", "--out-dir", rep], want_rc=0, timeout=300)
    import zipfile
    with zipfile.ZipFile(os.path.join(rep, "handgrad-hw1.zip")) as z:
        if "question5.pdf" in z.namelist():
            failures.append(("the zip packed a stale file", z.namelist(), ""))

    # Third round (a hostile review of the fixes): checkpoints that are not files, names too long
    # for the file system, empty names, out-of-range and hex numbers, lists with empty items,
    # budgets of 0 or garbage, and the zip right after another report.
    for args in (["inspect", "/dev/zero"], ["inspect", d], ["convert", "/dev/urandom", path("x.st")],
                 ["transfer", "eval", "--checkpoint", "/dev/zero"]):
        run(args, max_seconds=5)
    run(einsum_ok + ["-o", path("y" * 256)], want_in_err="longer than the file system allows", max_seconds=5)
    run(einsum_ok + ["-o", ""], want_in_err="empty", max_seconds=5)
    run(["mlp", "--seed", "18446744073709551616"], want_in_err="out of range")
    run(q3 + ["--max-steps", "9223372036854775808"], want_in_err="out of range")
    run(["mlp", "--iters", "0x10"], want_in_err="decimal")
    run(["mlp", "--lr", ""], want_in_err="empty")
    run(["mlp", "--lr", "1e-5,"], want_in_err="not a number")
    run(["mlp", "--max-memory", ""], want_in_err="not a size")
    run(["mlp", "--max-memory", "0"], want_in_err="at least one byte")
    run(["info"], env={"HANDGRAD_MAX_MEMORY": "0"}, want_in_err="HANDGRAD_MAX_MEMORY")
    run(["info"], env={"HANDGRAD_MAX_MEMORY": "junk"}, want_in_err="HANDGRAD_MAX_MEMORY")
    back_to_back = path("rep2")
    run(["report", "--quick", "--only", "q1,q4", "--out-dir", back_to_back], want_rc=0, timeout=300)
    future = os.path.join(back_to_back, "Q2_output.txt")
    open(future, "w").write("stale, dated tomorrow")
    os.utime(future, (time.time() + 86400, time.time() + 86400))
    os.symlink(path("a.npy"), os.path.join(back_to_back, "mlp_loss.csv"))
    run(["report", "--quick", "--only", "q1", "--out-dir", back_to_back], want_rc=0, timeout=300)
    with zipfile.ZipFile(os.path.join(back_to_back, "handgrad-hw1.zip")) as z:
        stale = [n for n in z.namelist() if n in ("question4.pdf", "Q2_output.txt", "mlp_loss.csv", "q4_autodiff.txt")]
        if stale:
            failures.append(("the zip packed files this run did not write", stale, ""))

    # Numeric flags: empty, signed where unsigned, negative limits, non-finite points.
    run(["mlp", "--seed", ""], want_in_err="must not be empty")
    run(["mlp", "--seed", "-1"], want_in_err="whole number")
    run(q3 + ["--max-steps", ""], want_in_err="must not be empty")
    run(q3 + ["--eval-limit", "-1", "--out-dir", path("q3")], want_in_err="--eval-limit")
    run(["autodiff", "--point", "nan,1"], want_in_err="finite")
    run(["autodiff", "--point", "1,inf"], want_in_err="finite")

    # Issue 30, fifth pass. An empty --expr or --only is refused, not read as "not given" (the
    # built-in function; every exercise, minutes of work).
    run(["autodiff", "--expr", ""], want_in_err="--expr", timeout=20)
    for only in ("", ",,", ","):
        run(["report", "--only", only, "--out-dir", path("only")], want_in_err="--only", timeout=20)
    # Sixth pass: with --x/--y the banner gives the sizes trained on, not the defaults (N=500 D=64).
    np.save(path("x43.npy"), np.ones((4, 3), np.float32))
    np.save(path("y4.npy"), np.ones(4, np.float32))
    p = run(["mlp", "--x", path("x43.npy"), "--y", path("y4.npy"), "--iters", "3", "--no-plot", "--out-dir",
             path("q2xy")], want_rc=0)
    if p is not None and "N=4 D=3 " not in p.stdout:
        failures.append(("mlp --x/--y banner", p.stdout.splitlines()[:1], ""))
    # OMP_NUM_THREADS past 64 threads a core: refused before a thread starts (libgomp segfaulted
    # starting 100,000).
    run(einsum_ok, env={"OMP_NUM_THREADS": "100000"}, want_in_err="OMP_NUM_THREADS", timeout=20)
    run(einsum_ok + ["-o", path("omp.npy")], want_rc=0, env={"OMP_NUM_THREADS": "3"})
    # An endless file where /proc/self/cgroup (or a cgroup's memory.max) is read: a bounded read,
    # not gigabytes of one line. The einsum runs at once, in a few MB.
    fake_fs = path("cgfs")
    os.makedirs(os.path.join(fake_fs, "memory"))
    os.symlink("/dev/zero", os.path.join(fake_fs, "memory", "memory.limit_in_bytes"))
    with open(path("cgroup"), "w") as f:
        f.write("4:memory:/\n")
    for env in ({"HANDGRAD_PROC_CGROUP": "/dev/zero"},
                {"HANDGRAD_PROC_CGROUP": path("cgroup"), "HANDGRAD_CGROUP_FS": fake_fs}):
        env = dict(env, HANDGRAD_MAX_MEMORY="")
        # The peak RSS of handgrad alone: a child's ru_maxrss starts at its parent's (this script
        # holds hundreds of MB), so a small Python in between starts it and reports it. Its address
        # space is capped at 2 GiB, except under AddressSanitizer (whose shadow memory needs more).
        measure = ("import os, resource, sys\n"
                   "if 'ASAN_OPTIONS' not in os.environ:\n"
                   "    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
                   "pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=["
                   "(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)])\n"
                   "_, status, usage = os.wait4(pid, 0)\n"
                   "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss // 1024)\n")
        try:
            out = subprocess.run([sys.executable, "-c", measure, HANDGRAD, "einsum", "ij,jk->ik", path("a.npy"),
                                  path("b.npy"), "-o", path("cg.npy")], capture_output=True, text=True, timeout=20,
                                 env=dict(os.environ, **env)).stdout.split()
            rc, peak_mb = int(out[0]), int(out[1])
        except subprocess.TimeoutExpired:
            rc, peak_mb = "timeout", 0
        ok = rc == 0 and peak_mb < 200
        print(f"{'ok  ' if ok else 'FAIL'} rc={rc} peak {peak_mb} MB: einsum with {env}")
        if not ok:
            failures.append((f"einsum with {env}", rc, f"peak {peak_mb} MB"))

print(f"cli_hostile_round2: {len(failures)} failure(s)")
for f in failures:
    print("  ", f)
sys.exit(1 if failures else 0)
