// run_process: exit codes, environment, folder, output file, timeout, and what happens to the
// helper when handgrad is told to stop. The stop cases run in a forked copy of this test, since
// their point is that the process running the helper ends by the signal.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>

#include "host/subprocess.h"

namespace fs = std::filesystem;
using handgrad::ProcessOptions;
using handgrad::ProcessResult;
using handgrad::run_process;
using std::chrono::steady_clock;

namespace {

fs::path scratch_dir() {
  const fs::path d = fs::temp_directory_path() / ("hg_subprocess_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Whether `pid` is still a running process (a zombie or a process that is gone is not).
bool running(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (stat.empty()) return false;
  const size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
}

// A number another process writes to `file` (whole: written to a temporary, then renamed), or 0
// after 20 s.
pid_t wait_for_number(const fs::path& file) {
  const auto t0 = steady_clock::now();
  while (!fs::exists(file) && steady_clock::now() - t0 < std::chrono::seconds(20))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  pid_t n = 0;
  std::ifstream(file) >> n;
  return n;
}

// A fresh file name for a number another process writes.
fs::path fresh_file(const std::string& name) {
  const fs::path p = scratch_dir() / name;
  fs::remove(p);
  return p;
}

// A helper that writes its pid to `pid_file`, then sleeps 30 s as one process (it execs, as
// python does); `prefix` is shell run first.
std::vector<std::string> sleeping_helper(const fs::path& pid_file, const std::string& prefix = "") {
  const std::string f = pid_file.string();
  return {"sh", "-c", prefix + "echo $$ > " + f + ".tmp && mv " + f + ".tmp " + f + " && exec sleep 30"};
}

// Forks a copy of this test that runs `body` and exits with what it returns.
pid_t fork_running(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(body());
  return pid;
}

int wait_status(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

bool ended_by(int status, int sig) { return WIFSIGNALED(status) && WTERMSIG(status) == sig; }

std::atomic<int> g_handled{0};
void note_signal(int sig) { g_handled.store(sig); }

}  // namespace

TEST(Subprocess, ExitCodeEnvironmentFolderAndOutput) {
  const fs::path dir = scratch_dir();
  ProcessOptions opt;
  opt.cwd = dir.string();
  opt.env = {{"HG_SUBPROCESS_TEST", "value"}};
  opt.output = (dir / "out.txt").string();
  const ProcessResult r = run_process({"sh", "-c", "echo \"$HG_SUBPROCESS_TEST $(pwd)\"; echo err >&2; exit 3"}, opt);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.signal, 0);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(read_text(dir / "out.txt"), "value " + fs::canonical(dir).string() + "\nerr\n");
}

// The report runs question1-3.py in a folder of its own with a log and a program given relative to
// ours (the default --out-dir is relative): both must mean what they mean to the caller, not to
// the child's folder (there they named results/python-check/results/python-check/...: exit 127).
TEST(Subprocess, RelativeOutputAndProgramAreTheCallers) {
  const fs::path dir = scratch_dir() / "relative";
  fs::create_directories(dir / "logs");
  fs::create_directories(dir / "tools");
  fs::create_directories(dir / "child");
  {
    std::ofstream f(dir / "tools" / "helper.sh");
    f << "#!/bin/sh\npwd\n";
  }
  fs::permissions(dir / "tools" / "helper.sh", fs::perms::owner_all);
  const fs::path before = fs::current_path();
  fs::current_path(dir);
  ProcessOptions opt;
  opt.cwd = "child";
  opt.output = "logs/out.txt";
  const ProcessResult r = run_process({"tools/helper.sh"}, opt);
  fs::current_path(before);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(read_text(dir / "logs" / "out.txt"), fs::canonical(dir / "child").string() + "\n");
  EXPECT_FALSE(fs::exists(dir / "child" / "logs"));
}

TEST(Subprocess, MissingProgramIs127) {
  const ProcessResult r = run_process({"/nonexistent/handgrad-helper"});
  EXPECT_EQ(r.exit_code, 127);
  EXPECT_FALSE(r.ok());
}

TEST(Subprocess, TimeoutEndsTheChildButNotUs) {
  ProcessOptions opt;
  opt.timeout_s = 0.2;
  const auto t0 = steady_clock::now();
  const ProcessResult r = run_process({"sh", "-c", "exec sleep 30"}, opt);
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.signal, SIGTERM);
  EXPECT_LT(steady_clock::now() - t0, std::chrono::seconds(10));
}

// SIGTERM (timeout(1), `kill PID`), SIGINT and SIGHUP sent to handgrad alone reach the helper
// too: handgrad ends by the signal, and the helper is gone with it.
TEST(Subprocess, StopSignalToUsAloneEndsTheHelperAndThenUs) {
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    const fs::path pid_file = fresh_file("alone_" + std::to_string(sig));
    const pid_t us = fork_running([&] { return run_process(sleeping_helper(pid_file)).signal == sig ? 0 : 1; });
    const pid_t helper = wait_for_number(pid_file);
    ASSERT_GT(helper, 0) << "the helper never started";
    ::kill(us, sig);
    const int status = wait_status(us);
    EXPECT_TRUE(ended_by(status, sig)) << "signal " << sig << ", status " << status;
    EXPECT_FALSE(running(helper)) << "the helper outlived the process that ran it (signal " << sig << ")";
    if (running(helper)) ::kill(helper, SIGKILL);
  }
}

// What the helper started goes too: a wrapper that does not exec (a shell around python) and a
// background worker of the helper's are in its process group, which the signal is sent to.
TEST(Subprocess, StopSignalReachesWhatTheHelperStarted) {
  const fs::path worker_file = fresh_file("worker"), pid_file = fresh_file("wrapper");
  const std::string w = worker_file.string(), p = pid_file.string();
  const pid_t us = fork_running([&] {
    run_process({"sh", "-c", "sh -c 'echo $$ > " + w + ".tmp && mv " + w + ".tmp " + w + " && exec sleep 30' & " +
                                 "echo $$ > " + p + ".tmp && mv " + p + ".tmp " + p + "; wait"});
    return 1;
  });
  const pid_t wrapper = wait_for_number(pid_file), worker = wait_for_number(worker_file);
  ASSERT_GT(wrapper, 0);
  ASSERT_GT(worker, 0);
  ::kill(us, SIGTERM);
  const int status = wait_status(us);
  EXPECT_TRUE(ended_by(status, SIGTERM)) << "status " << status;
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the worker's reaper is init now
  EXPECT_FALSE(running(wrapper));
  EXPECT_FALSE(running(worker)) << "the helper's own child outlived handgrad";
  if (running(worker)) ::kill(worker, SIGKILL);
}

// SIGCHLD ignored by whoever started us would reap the helper behind run_process's back and lose
// its exit status (a matplotlib probe that succeeded would read as a failure).
TEST(Subprocess, ExitStatusKeptWhenSigchldIsIgnored) {
  const pid_t us = fork_running([] {
    ::signal(SIGCHLD, SIG_IGN);
    const ProcessResult r = run_process({"sh", "-c", "exit 3"});
    const bool restored = ::signal(SIGCHLD, SIG_IGN) == SIG_IGN;  // the caller's setting is back
    return r.exit_code == 3 && restored ? 0 : 1;
  });
  const int status = wait_status(us);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

// The signal taken by another thread (OpenMP's workers take them as often as the main thread):
// passed on all the same, and the thread running the helper ends the process by it.
TEST(Subprocess, StopSignalTakenByAnotherThread) {
  const fs::path pid_file = fresh_file("other_thread"), tid_file = fresh_file("other_thread_tid");
  const pid_t us = fork_running([&] {
    std::thread([&] {
      std::ofstream(tid_file.string() + ".tmp") << ::syscall(SYS_gettid);
      fs::rename(tid_file.string() + ".tmp", tid_file);
      for (;;) ::pause();
    }).detach();
    run_process(sleeping_helper(pid_file));
    return 1;  // run_process returned: the signal did not end us
  });
  const pid_t helper = wait_for_number(pid_file), other_thread = wait_for_number(tid_file);
  ASSERT_GT(helper, 0);
  ASSERT_GT(other_thread, 0);
  ::syscall(SYS_tgkill, us, other_thread, SIGTERM);
  const int status = wait_status(us);
  EXPECT_TRUE(ended_by(status, SIGTERM)) << "status " << status;
  EXPECT_FALSE(running(helper));
  if (running(helper)) ::kill(helper, SIGKILL);
}

// A helper that ignores the signal passed on is killed 3 s later; handgrad still ends by it.
TEST(Subprocess, HelperIgnoringTheStopSignalIsKilled) {
  const fs::path pid_file = fresh_file("ignoring");
  const pid_t us = fork_running([&] {
    run_process(sleeping_helper(pid_file, "trap '' TERM; "));
    return 1;
  });
  const pid_t helper = wait_for_number(pid_file);
  ASSERT_GT(helper, 0);
  const auto t0 = steady_clock::now();
  ::kill(us, SIGTERM);
  const int status = wait_status(us);
  const double took = std::chrono::duration<double>(steady_clock::now() - t0).count();
  EXPECT_TRUE(ended_by(status, SIGTERM)) << "status " << status;
  EXPECT_GE(took, 2.5);
  EXPECT_LT(took, 15);
  EXPECT_FALSE(running(helper));
  if (running(helper)) ::kill(helper, SIGKILL);
}

// Run under nohup (SIGHUP ignored), a SIGHUP changes nothing: neither for us nor for the helper.
TEST(Subprocess, IgnoredSignalStaysIgnored) {
  const fs::path pid_file = fresh_file("nohup");
  const pid_t us = fork_running([&] {
    ::signal(SIGHUP, SIG_IGN);
    return run_process(sleeping_helper(pid_file)).signal == SIGKILL ? 0 : 1;
  });
  const pid_t helper = wait_for_number(pid_file);
  ASSERT_GT(helper, 0);
  ::kill(us, SIGHUP);
  ::kill(helper, SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_TRUE(running(helper));
  EXPECT_TRUE(running(us));
  ::kill(helper, SIGKILL);
  const int status = wait_status(us);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

// A program embedding handgrad with its own SIGINT handler (Python's KeyboardInterrupt): the
// helper ends, the handler runs, and run_process returns instead of ending the program.
TEST(Subprocess, CallersOwnHandlerRunsInsteadOfEnding) {
  const fs::path pid_file = fresh_file("own_handler");
  const pid_t us = fork_running([&] {
    struct sigaction sa {};
    sa.sa_handler = note_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, nullptr);
    const ProcessResult r = run_process(sleeping_helper(pid_file));
    return r.signal == SIGINT && g_handled.load() == SIGINT ? 0 : 1;
  });
  const pid_t helper = wait_for_number(pid_file);
  ASSERT_GT(helper, 0);
  ::kill(us, SIGINT);
  const int status = wait_status(us);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  EXPECT_FALSE(running(helper));
}
