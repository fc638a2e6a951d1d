#include "host/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "kernels/error.h"

extern char** environ;

namespace handgrad {

namespace {

// A child ended by Ctrl-C or a termination request: end the same way (the default action), so
// that the shell, a test harness or a CI runner sees the interruption, not a success.
void propagate_interrupt(int sig) {
  if (sig != SIGINT && sig != SIGTERM && sig != SIGHUP) return;
  std::fflush(nullptr);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace

std::string find_project_folder(const std::string& relative, const std::string& marker) {
  namespace fs = std::filesystem;
  std::vector<fs::path> candidates = {fs::path(HANDGRAD_SOURCE_DIR) / relative};
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back(exe.parent_path().parent_path() / relative);
    candidates.push_back(exe.parent_path().parent_path().parent_path() / relative);
  }
  candidates.push_back(fs::current_path(ec) / relative);
  for (const fs::path& p : candidates)
    if (fs::exists(p / marker, ec)) return p.string();
  return "";
}

ProcessResult run_process(const std::vector<std::string>& argv, const ProcessOptions& opt) {
  HG_ASSERT(!argv.empty(), "run_process: no program");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  // The environment: ours, with opt.env's names replaced.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    bool replaced = false;
    for (const auto& [k, v] : opt.env) replaced |= kv.compare(0, k.size() + 1, k + "=") == 0;
    if (!replaced) env_strings.push_back(kv);
  }
  for (const auto& [k, v] : opt.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!opt.cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, opt.cwd.c_str());
  const std::string out = opt.quiet ? "/dev/null" : opt.output;
  if (!out.empty()) {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  }
  std::fflush(nullptr);  // what we printed comes before what the child prints
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ProcessResult r;
  if (rc != 0) {
    r.exit_code = 127;
    return r;
  }

  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  bool term_sent = false;
  int status = 0;
  for (;;) {
    const pid_t w = ::waitpid(pid, &status, opt.timeout_s > 0 ? WNOHANG : 0);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) return r;  // cannot happen for our own child
    if (opt.timeout_s > 0 && w == 0) {
      const double t = std::chrono::duration<double>(clock::now() - start).count();
      if (!term_sent && t > opt.timeout_s) {
        ::kill(pid, SIGTERM);
        term_sent = true;
        r.timed_out = true;
      } else if (term_sent && t > opt.timeout_s + 3) {
        ::kill(pid, SIGKILL);
      }
      const timespec nap{0, 20 * 1000 * 1000};
      ::nanosleep(&nap, nullptr);
    }
  }
  if (WIFEXITED(status)) {
    r.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    r.signal = WTERMSIG(status);
    if (!r.timed_out) propagate_interrupt(r.signal);
  }
  return r;
}

}  // namespace handgrad
