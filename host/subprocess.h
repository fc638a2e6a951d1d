// Runs a helper program (matplotlib plots, the homework's Python scripts) and waits for it,
// without std::system's habit of ignoring SIGINT in the caller: Ctrl-C, SIGTERM or SIGHUP while
// a child runs is passed on to the child, and handgrad then ends by the same signal (exit status
// 128 + signal; outputs are written whole or not at all, so none is left half done); a child that
// ignores it is killed 3 s later. A child ended by one of them alone ends handgrad the same way.
// The child runs in a process group of its own, and the signal goes to that group: no helper,
// nor anything a helper started, outlives handgrad's interruption or a helper's timeout.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace handgrad {

// `output` and a program path with a '/' are the caller's: relative to our working folder, not to
// `cwd`. The other arguments and `env` reach the child as they are: a path among them that the
// child must read after moving to `cwd` has to be absolute (the caller's job).
struct ProcessOptions {
  std::string cwd;                                        // "" : ours
  std::vector<std::pair<std::string, std::string>> env;  // set (or replace) in the child's environment
  std::string output;                                     // stdout and stderr to this file ("" : ours)
  bool quiet = false;                                     // stdout and stderr to /dev/null
  double timeout_s = 0;                                   // > 0: SIGTERM after this long, SIGKILL 3 s later
};

struct ProcessResult {
  int exit_code = -1;  // when it exited (-1: its status was lost, e.g. reaped by someone else)
  int signal = 0;      // when a signal ended it (SIGTERM after a timeout included)
  bool timed_out = false;
  bool ok() const { return signal == 0 && exit_code == 0; }
};

// Where a folder of the project's helper files is (`relative`, e.g. "plots", holding `marker`):
// in the source tree this binary was built from; else next to the binary (../, ../../: a build or
// stage folder inside the repository); else under the current folder. "" when none holds it.
std::string find_project_folder(const std::string& relative, const std::string& marker);

// argv[0] is looked up on PATH. A program that cannot start gives exit code 127, as a shell does.
// One child at a time (calls from several threads take turns).
ProcessResult run_process(const std::vector<std::string>& argv, const ProcessOptions& opt = {});

}  // namespace handgrad
