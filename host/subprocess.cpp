#include "host/subprocess.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "kernels/error.h"

extern char** environ;

namespace handgrad {

namespace {

// The signals that end handgrad (Ctrl-C, a termination request, a closed terminal). While a child
// runs they are passed on to it, and handgrad ends by them once the child is gone, so nothing we
// started outlives us: not when the signal reaches only handgrad (timeout(1), a CI runner's kill,
// `kill PID`), nor when a terminal's Ctrl-C lands while the child is being started, before it is
// in our process group's list.
constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP};

bool is_stop_signal(int sig) {
  for (int s : kStopSignals)
    if (s == sig) return true;
  return false;
}

// Lock-free atomics are async-signal-safe, and any thread may take a process-directed signal
// (OpenMP's workers included).
std::atomic<pid_t> g_child{0};
std::atomic<int> g_received{0};
std::atomic<int> g_in_handler{0};  // handlers that may still signal the pid they read
static_assert(std::atomic<pid_t>::is_always_lock_free && std::atomic<int>::is_always_lock_free);

void forward_to_child(int sig) {
  const int saved_errno = errno;
  g_in_handler.fetch_add(1);
  g_received.store(sig);
  const pid_t child = g_child.load();
  if (child > 0) ::kill(-child, sig);  // the helper's process group: it and whatever it started
  g_in_handler.fetch_sub(1);
  errno = saved_errno;
}

sigset_t stop_signal_set() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kStopSignals) sigaddset(&set, s);
  return set;
}

// For the life of one child: the stop signals handgrad does not ignore go to forward_to_child (a
// signal ignored by nohup or a background job stays ignored, for us and for the child), and they
// are blocked in this thread until the child's pid is known, so one that comes while the child is
// being started waits and is passed on, not lost. The destructor puts back the caller's handlers
// and mask; g_received then holds the stop signal received meanwhile (0: none).
class StopSignalsToChild {
 public:
  StopSignalsToChild() {
    const sigset_t stop = stop_signal_set();
    pthread_sigmask(SIG_BLOCK, &stop, &caller_mask_);
    g_received.store(0);
    struct sigaction forward {};
    forward.sa_handler = forward_to_child;
    forward.sa_flags = SA_RESTART;  // other threads' system calls go on as under the default action
    sigemptyset(&forward.sa_mask);
    for (int i = 0; i < kCount; ++i) {
      ::sigaction(kStopSignals[i], nullptr, &previous_[i]);
      installed_[i] = previous_[i].sa_handler != SIG_IGN;
      if (installed_[i]) ::sigaction(kStopSignals[i], &forward, nullptr);
    }
    // SIGCHLD ignored (inherited so) would reap the child behind our back and lose its status.
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    sigemptyset(&default_action.sa_mask);
    ::sigaction(SIGCHLD, &default_action, &previous_sigchld_);
  }
  ~StopSignalsToChild() {
    disarm();
    for (int i = 0; i < kCount; ++i)
      if (installed_[i]) ::sigaction(kStopSignals[i], &previous_[i], nullptr);
    ::sigaction(SIGCHLD, &previous_sigchld_, nullptr);
    pthread_sigmask(SIG_SETMASK, &caller_mask_, nullptr);
  }
  StopSignalsToChild(const StopSignalsToChild&) = delete;
  StopSignalsToChild& operator=(const StopSignalsToChild&) = delete;

  const sigset_t& caller_mask() const { return caller_mask_; }

  // The child runs: from now on a stop signal is passed on to it (a pending one at once).
  void started(pid_t child) {
    g_child.store(child);
    // One that another thread took while the child was being started found no pid to pass on to.
    if (const int sig = g_received.load()) ::kill(-child, sig);
    pthread_sigmask(SIG_SETMASK, &caller_mask_, nullptr);
  }

  // Stops passing signals on, and waits for a handler that read the pid before (on another
  // thread) to finish with it: after this the child can be reaped without a handler ever
  // signalling a process that reuses its pid.
  void disarm() {
    const sigset_t stop = stop_signal_set();
    pthread_sigmask(SIG_BLOCK, &stop, nullptr);
    g_child.store(0);
    while (g_in_handler.load() != 0) sched_yield();
  }

 private:
  static constexpr int kCount = sizeof(kStopSignals) / sizeof(kStopSignals[0]);
  sigset_t caller_mask_;
  struct sigaction previous_[kCount];
  bool installed_[kCount];
  struct sigaction previous_sigchld_;
};

// Ends handgrad by `sig` as the caller's disposition says: the default terminates (so that the
// shell, a test harness or a CI runner sees the interruption, not a success), even where this
// thread blocks the signal; an embedding program's handler runs.
void end_by(int sig) {
  std::fflush(nullptr);
  ::raise(sig);
  struct sigaction now {};
  ::sigaction(sig, nullptr, &now);
  if (now.sa_handler == SIG_DFL) {
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    pthread_sigmask(SIG_UNBLOCK, &one, nullptr);  // the pending signal acts now
  }
}

// `path` against our working folder ("" stays ""). With only_with_slash, a bare name (looked up on
// PATH) stays as it is, as a shell would treat it.
std::string absolute_if_relative(const std::string& path, bool only_with_slash) {
  if (path.empty() || path[0] == '/' || (only_with_slash && path.find('/') == std::string::npos)) return path;
  std::error_code ec;
  const std::filesystem::path abs = std::filesystem::absolute(path, ec);
  return ec ? path : abs.string();
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

  // The child opens its output and executes its program after moving to opt.cwd: paths the caller
  // gave relative to our folder are made absolute first, or they would name files under opt.cwd.
  const std::string program = absolute_if_relative(argv[0], /*only_with_slash=*/true);
  args[0] = const_cast<char*>(program.c_str());
  const std::string out = opt.quiet ? "/dev/null" : absolute_if_relative(opt.output, false);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!opt.cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, opt.cwd.c_str());
  if (!out.empty()) {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  }
  // One child at a time: the forwarding handler knows one pid.
  static std::mutex one_child;
  std::lock_guard<std::mutex> lock(one_child);
  ProcessResult r;
  int status = 0;
  bool ended = false;  // the child has exited (a zombie until we reap it)
  {
    StopSignalsToChild to_child;
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    // The child starts with our caller's mask and SIGCHLD's default action, in a process group of
    // its own: a stop signal reaches it and whatever it starts (a wrapper's python, a script's
    // workers), never only the first of them. (A terminal's Ctrl-C reaches it through us.)
    sigset_t sigchld;
    sigemptyset(&sigchld);
    sigaddset(&sigchld, SIGCHLD);
    posix_spawnattr_setsigmask(&attr, &to_child.caller_mask());
    posix_spawnattr_setsigdefault(&attr, &sigchld);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    std::fflush(nullptr);  // what we printed comes before what the child prints
    pid_t pid = -1;
    const int rc = posix_spawnp(&pid, args[0], &actions, &attr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
      r.exit_code = 127;
    } else {
      to_child.started(pid);
      // Polled, not a blocking wait: the timeout, and a stop signal passed on that the child
      // ignores or survives, end it by SIGTERM / SIGKILL in time whichever thread took the signal.
      using clock = std::chrono::steady_clock;
      const auto start = clock::now();
      bool term_sent = false;
      double stop_seen_at = -1;
      for (;;) {
        // Without reaping: while the child is a zombie its pid cannot be reused.
        siginfo_t info{};
        const int w = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT | WNOHANG);
        if (w == 0 && info.si_pid == pid) {
          ended = true;
          break;
        }
        if (w < 0 && errno != EINTR) break;  // ECHILD: someone else waited for it: its status is lost
        const double t = std::chrono::duration<double>(clock::now() - start).count();
        if (stop_seen_at < 0 && g_received.load()) stop_seen_at = t;
        if (stop_seen_at >= 0 && t > stop_seen_at + 3) ::kill(-pid, SIGKILL);
        if (opt.timeout_s > 0 && !term_sent && t > opt.timeout_s) {
          ::kill(-pid, SIGTERM);
          term_sent = true;
          r.timed_out = true;
        } else if (term_sent && t > opt.timeout_s + 3) {
          ::kill(-pid, SIGKILL);
        }
        const timespec nap{0, 20 * 1000 * 1000};
        ::nanosleep(&nap, nullptr);
      }
      to_child.disarm();
      // Stopped or timed out: what the helper started goes with it. (Its group's id stays ours
      // while the helper is an unreaped zombie.)
      if (g_received.load() || r.timed_out) ::kill(-pid, SIGKILL);
      if (ended)
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
    }
  }  // the caller's handlers and mask are back; no handler runs for us any more
  const int received = g_received.load();
  if (ended && WIFEXITED(status)) {
    r.exit_code = WEXITSTATUS(status);
  } else if (ended && WIFSIGNALED(status)) {
    r.signal = WTERMSIG(status);
  }
  // A stop signal handgrad received, or one that ended the child (sent to it alone), ends handgrad
  // too; our own timeout's SIGTERM does not.
  const int end_signal = received ? received : (!r.timed_out && is_stop_signal(r.signal) ? r.signal : 0);
  if (end_signal) end_by(end_signal);
  return r;
}

}  // namespace handgrad
