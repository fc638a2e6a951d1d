#include "host/plot.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "kernels/error.h"

namespace handgrad {

namespace fs = std::filesystem;

namespace {

// Quote for /bin/sh: wrap in single quotes, escaping the single quotes inside.
std::string sh_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// plots/ of the source tree this binary was built from; else next to the binary (../plots,
// ../../plots: a build or stage folder inside the repository); else ./plots.
std::string plots_dir() {
  std::vector<fs::path> candidates = {fs::path(HANDGRAD_SOURCE_DIR) / "plots"};
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back(exe.parent_path().parent_path() / "plots");
    candidates.push_back(exe.parent_path().parent_path().parent_path() / "plots");
  }
  candidates.push_back(fs::current_path(ec) / "plots");
  for (const fs::path& p : candidates)
    if (fs::exists(p / "plot_common.py", ec)) return p.string();
  return "";
}

// The first python3 that can import matplotlib: $HANDGRAD_PYTHON, Debian's, then PATH's.
std::string python_with_matplotlib() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("HANDGRAD_PYTHON")) candidates.push_back(env);
  candidates.push_back("/usr/bin/python3");
  candidates.push_back("python3");
  for (const std::string& py : candidates) {
    const std::string cmd = sh_quote(py) + " -c 'import matplotlib' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0) return py;
  }
  return "";
}

}  // namespace

bool run_plot(const std::string& script, const std::vector<std::string>& args) {
  static const std::string python = python_with_matplotlib();
  static const std::string dir = plots_dir();
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
  std::string cmd = sh_quote(python) + " " + sh_quote(dir + "/" + script);
  for (const std::string& a : args) cmd += " " + sh_quote(a);
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    std::fprintf(stderr, "handgrad: warning: %s failed (exit %d); no plot written\n", script.c_str(),
                 WIFEXITED(rc) ? WEXITSTATUS(rc) : -1);
    return false;
  }
  return true;
}

}  // namespace handgrad
