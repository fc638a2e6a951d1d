#!/usr/bin/env python3
"""End to end: `handgrad report --quick` run the way the README runs it writes every file it
promises, its checks pass, and the zip holds the checklist's seven files.

    cli_report.py HANDGRAD [default|relative-out-dir|run-sh]

default           `handgrad report --quick` from a fresh folder: results/ there (relative, the default);
                  every file, the checklist's seven in the zip, a script run from the unzipped folder
relative-out-dir  `handgrad report --quick --only q4,scripts --out-dir some/relative/dir` from a fresh folder
run-sh            `cd <fresh folder> && <repo>/scripts/run.sh --quick --only q4,scripts` (the build under
                  test, through $HANDGRAD_BUILD_DIR): results/ in the folder it was started from

The last two run what crosses folders (a plot, question1-3.py run in a folder of their own, the
zip) without the exercises' training, which the first has run. Each mode also checks that nothing
is written where it should not be (the folder it ran from, the repository's own results/). $HG_REPORT_OUT, when set (default mode), is an absolute --out-dir kept
for the GPU check. $HG_REPORT_ALLOW_NO_PLOTS=1 (scripts/gpu-check.sh sets it where its probe found
no matplotlib) accepts a report without its PDFs, when handgrad said it found no matplotlib;
everything else is checked as always. CI never sets it: there a missing plot is a failure.
Likewise $HG_REPORT_ALLOW_NO_MODULE=1 (the GPU check's staged build and the sanitizer build have no
Python module) accepts a report whose question1-3.py were not run because no handgrad module could
be imported; elsewhere the scripts must have run."""
import json
import os
import subprocess
import sys
import tempfile
import zipfile

HANDGRAD = os.path.abspath(sys.argv[1])
MODE = sys.argv[2] if len(sys.argv) > 2 else "default"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKLIST = ("question1.py", "question2.py", "question2_result.pdf", "question3.py", "question3_result.pdf",
             "question4.pdf", "question5.pdf")
PDFS = ("question2_result.pdf", "question3_result.pdf", "question3_grid.pdf", "question4.pdf", "question5.pdf")
EVERY_FILE = ["README.md", "report.json", "q1_einsum.txt", "q1_einsum.json", "q1/mul_A.npy", "q1/mul_B.npy",
              "q1/mul_out.npy", "q1/contract_A.npy", "q1/contract_B.npy", "q1/contract_out.npy", "q1/sum_A.npy",
              "q1/sum_out.npy", "Q2_output.txt", "mlp_loss.csv", "mlp_summary.json", "question2_result.pdf",
              "question3_result.pdf", "question3_grid.pdf", "q3_grid.md", "q3_summary.json", "q4_autodiff.txt",
              "q4_squared.json", "q4_expanded.json", "question4.pdf", "q5_gradcheck.txt", "question5.pdf",
              "handgrad-hw1.zip", "question1.py", "question2.py", "question3.py"]
assert MODE in ("default", "relative-out-dir", "run-sh"), f"unknown mode {MODE}"

problems = []


def check(cond, what):
    if not cond:
        problems.append(what)
    return cond


def mtime(path):
    return os.stat(path).st_mtime_ns if os.path.exists(path) else None


with tempfile.TemporaryDirectory() as d:
    cwd = os.path.join(d, "home" if MODE == "run-sh" else "work")
    os.makedirs(cwd)
    env = dict(os.environ)
    if MODE == "default":
        out_arg = os.environ.get("HG_REPORT_OUT")
        argv = [HANDGRAD, "report", "--quick"] + (["--out-dir", out_arg] if out_arg else [])
        out = out_arg or os.path.join(cwd, "results")
        expected_in_cwd = [] if out_arg else ["results"]
    elif MODE == "relative-out-dir":
        argv = [HANDGRAD, "report", "--quick", "--only", "q4,scripts", "--out-dir", "some/relative/dir"]
        out = os.path.join(cwd, "some", "relative", "dir")
        expected_in_cwd = ["some"]
    else:
        # The repository's scripts with the build under test (already built: build.sh only checks it).
        argv = [os.path.join(REPO, "scripts", "run.sh"), "--quick", "--only", "q4,scripts"]
        env["HANDGRAD_BUILD_DIR"] = os.path.dirname(HANDGRAD)
        out = os.path.join(cwd, "results")
        expected_in_cwd = ["results"]
    repo_zip = os.path.join(REPO, "results", "handgrad-hw1.zip")
    repo_zip_before = mtime(repo_zip)
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=580)
    print(p.stdout[-3000:], p.stderr[-2000:])
    check(p.returncode == 0, f"exit code {p.returncode}, not 0")
    check("all checks passed" in p.stdout, "the report did not end with 'all checks passed'")
    check(sorted(os.listdir(cwd)) == expected_in_cwd,
          f"the folder it ran from holds {sorted(os.listdir(cwd))}, not {expected_in_cwd}")
    check(mtime(repo_zip) == repo_zip_before, "the repository's results/handgrad-hw1.zip was written")

    no_plots = os.environ.get("HG_REPORT_ALLOW_NO_PLOTS") == "1" and "no python3 with matplotlib" in p.stderr
    if no_plots:
        print("cli_report: no matplotlib where handgrad looked: the PDFs are not checked")
    checklist = CHECKLIST if MODE == "default" else ("question1.py", "question2.py", "question3.py", "question4.pdf")
    wanted = EVERY_FILE if MODE == "default" else ["report.json", "handgrad-hw1.zip", "q4_autodiff.txt"] + list(checklist)
    missing = [f for f in wanted if not os.path.isfile(os.path.join(out, f)) and not (no_plots and f in PDFS)]
    check(not missing, f"missing files: {missing}")
    summary = {}
    if os.path.isfile(os.path.join(out, "report.json")):
        summary = json.load(open(os.path.join(out, "report.json")))
    check(summary.get("all_checks_passed") is True, "report.json does not say all_checks_passed")
    scripts = summary.get("python_scripts", {})
    no_module = os.environ.get("HG_REPORT_ALLOW_NO_MODULE") == "1" and "skipped" in scripts
    if not no_module:
        check("skipped" not in scripts, f"the report did not run the scripts: {scripts.get('skipped')}")
        for script in ("question1.py", "question2.py", "question3.py"):
            check(scripts.get(script, {}).get("exit_code") == 0,
                  f"{script} in the report: {scripts.get(script)}")
    if os.path.isfile(os.path.join(out, "handgrad-hw1.zip")):
        with zipfile.ZipFile(os.path.join(out, "handgrad-hw1.zip")) as z:
            check(z.testzip() is None, "the zip is damaged")
            absent = [f for f in checklist if f not in z.namelist() and not (no_plots and f in PDFS)]
            check(not absent, f"the zip lacks checklist files: {absent}")
            # The scripts in the zip are the ones the report ran.
            for script in ("question1.py", "question2.py", "question3.py"):
                check(z.read(script) == open(os.path.join(out, script), "rb").read(),
                      f"the zip's {script} is not the one the report ran")
            if MODE == "default" and not no_module:
                # The student's folder: the zip unpacked elsewhere, a script run from there.
                unzipped = os.path.join(d, "unzipped")
                z.extractall(unzipped)
                env1 = dict(os.environ, MPLBACKEND="Agg",
                            PYTHONPATH=os.path.join(os.path.dirname(HANDGRAD), "python"))
                r = subprocess.run([sys.executable, "question1.py", "--quick", "--device", "cpu"], cwd=unzipped,
                                   env=env1, capture_output=True, text=True, timeout=300)
                last = (r.stdout.strip().splitlines() or [""])[-1]
                print(f"cli_report: question1.py --quick from the unzipped folder: exit {r.returncode}: {last}")
                check(r.returncode == 0, f"question1.py from the unzipped folder: {r.stdout[-1000:]} {r.stderr[-1000:]}")
    if MODE == "default" and not missing:
        lines = open(os.path.join(out, "Q2_output.txt")).read().splitlines()
        check(len(lines) == 1000 and lines[0].startswith("At 0-th iteration, loss is ")
              and lines[-1].startswith("At 99900-th iteration, loss is "), "Q2_output.txt is not the course's log")
        for pdf in PDFS if not no_plots else ():
            check(open(os.path.join(out, pdf), "rb").read(5) == b"%PDF-", f"{pdf} is not a PDF")
        squared = json.load(open(os.path.join(out, "q4_squared.json")))
        check(squared["jacobian"] == [[12, 12], [-4, 4]] and len(squared["tables"]) == 4, "q4_squared.json")
    if os.path.isdir(out):
        leftovers = [f for f in os.listdir(out) if ".tmp." in f or f.endswith(".tmp")]
        check(not leftovers, f"temporary files left: {leftovers}")

for what in problems:
    print(f"cli_report ({MODE}): {what}")
print(f"cli_report ({MODE}): {'passed' if not problems else 'FAILED'}")
sys.exit(0 if not problems else 1)
