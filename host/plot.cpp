#include "host/plot.h"

#include <cstdio>
#include <cstdlib>

#include "host/subprocess.h"
#include "kernels/error.h"

namespace handgrad {

namespace {

// The first python3 that can import matplotlib: $HANDGRAD_PYTHON, Debian's, then PATH's. (A probe
// interrupted by Ctrl-C ends handgrad too: run_process passes the interruption on, so it is never
// taken for "no matplotlib".)
std::string python_with_matplotlib() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("HANDGRAD_PYTHON")) candidates.push_back(env);
  candidates.push_back("/usr/bin/python3");
  candidates.push_back("python3");
  ProcessOptions quiet;
  quiet.quiet = true;
  for (const std::string& py : candidates)
    if (run_process({py, "-c", "import matplotlib"}, quiet).ok()) return py;
  return "";
}

}  // namespace

bool run_plot(const std::string& script, const std::vector<std::string>& args) {
  static const std::string python = python_with_matplotlib();
  static const std::string dir = find_project_folder("plots", "plot_common.py");
  if (python.empty()) {
    std::fprintf(stderr, "handgrad: warning: no python3 with matplotlib found; skipping %s "
                         "(apt-get install python3-matplotlib)\n", script.c_str());
    return false;
  }
  if (dir.empty()) {
    std::fprintf(stderr, "handgrad: warning: plots/ not found next to the binary; skipping %s\n",
                 script.c_str());
    return false;
  }
  std::vector<std::string> argv = {python, dir + "/" + script};
  argv.insert(argv.end(), args.begin(), args.end());
  const ProcessResult r = run_process(argv);  // a Ctrl-C during the plot ends handgrad as well
  if (!r.ok()) {
    std::fprintf(stderr, "handgrad: warning: %s failed (%s); no plot written\n", script.c_str(),
                 r.signal ? cat("signal ", r.signal).c_str() : cat("exit ", r.exit_code).c_str());
    return false;
  }
  return true;
}

}  // namespace handgrad
