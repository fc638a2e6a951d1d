// run_process: exit codes, environment, folder, output file, timeout, and what happens to the
// child when handgrad is told to stop. The stop cases run in a forked copy of this test, since
// their point is that the process running the helper ends by the signal.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "host/subprocess.h"

namespace fs = std::filesystem;
using handgrad::ProcessOptions;
using handgrad::ProcessResult;
using handgrad::run_process;

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

std::atomic<int> g_handled{0};
void note_signal(int sig) { g_handled.store(sig); }
void install_own_sigint_handler() {
  struct sigaction sa {};
  sa.sa_handler = note_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
}

// Forks; the child runs a helper that writes its pid to `pid_file` and sleeps, with `setup` done
// first, and exits 0 if run_process returns with the helper ended by `sig` (and `setup`'s handler
// run), 1 otherwise. The parent sends `sig` to the forked
// process alone once the helper runs, and returns the forked process's wait status and the
// helper's pid.
std::pair<int, pid_t> stop_while_helper_runs(int sig, void (*setup)()) {
  const fs::path pid_file = scratch_dir() / ("helper_" + std::to_string(sig));
  fs::remove(pid_file);
  const pid_t forked = ::fork();
  if (forked == 0) {
    if (setup) setup();
    const std::string script = "echo $$ > " + pid_file.string() + ".tmp && mv " + pid_file.string() + ".tmp " +
                               pid_file.string() + " && exec sleep 30";
    const ProcessResult r = run_process({"sh", "-c", script});
    ::_exit(r.signal == sig && (!setup || g_handled.load() == sig) ? 0 : 1);
  }
  const auto t0 = std::chrono::steady_clock::now();
  while (!fs::exists(pid_file) && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  pid_t helper = 0;
  std::ifstream(pid_file) >> helper;
  ::kill(forked, sig);
  int status = 0;
  ::waitpid(forked, &status, 0);
  return {status, helper};
}

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

TEST(Subprocess, MissingProgramIs127) {
  const ProcessResult r = run_process({"/nonexistent/handgrad-helper"});
  EXPECT_EQ(r.exit_code, 127);
  EXPECT_FALSE(r.ok());
}

TEST(Subprocess, TimeoutEndsTheChildButNotUs) {
  ProcessOptions opt;
  opt.timeout_s = 0.2;
  const auto t0 = std::chrono::steady_clock::now();
  const ProcessResult r = run_process({"sh", "-c", "exec sleep 30"}, opt);
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.signal, SIGTERM);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
}

// SIGTERM (timeout(1), `kill PID`) and SIGINT/SIGHUP sent to handgrad alone reach the helper too:
// handgrad ends by the signal, and the helper is gone with it.
TEST(Subprocess, StopSignalToUsAloneEndsTheHelperAndThenUs) {
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    const auto [status, helper] = stop_while_helper_runs(sig, nullptr);
    ASSERT_GT(helper, 0) << "the helper never started";
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == sig) << "signal " << sig << ", status " << status;
    EXPECT_FALSE(running(helper)) << "the helper outlived the process that ran it (signal " << sig << ")";
    if (running(helper)) ::kill(helper, SIGKILL);
  }
}

// A program embedding handgrad with its own SIGINT handler (Python's KeyboardInterrupt): the helper
// ends, the handler runs, and run_process returns instead of ending the program.
TEST(Subprocess, CallersOwnHandlerRunsInsteadOfEnding) {
  const auto [status, helper] = stop_while_helper_runs(SIGINT, install_own_sigint_handler);
  ASSERT_GT(helper, 0) << "the helper never started";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  EXPECT_FALSE(running(helper));
}
