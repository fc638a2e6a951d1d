// Progress of long work (training, evaluation, the report's steps) on stderr, so that nobody
// watching a terminal or a log for minutes has to guess whether the program still runs.
//
// On a terminal: one line redrawn in place (at most 5 times a second, cut to the terminal's
// width), left on screen when the work ends. Elsewhere (a log, a pipe): a line at each further
// tenth of the work, but at most every 5 s, and at least every 20 s while updates come; the
// final line always. Each line ends with the ETA (from the rate so far) or, at the end, the time
// taken. A disabled Progress prints nothing (--quiet; the Python module's callbacks).
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

namespace handgrad {

// "42s", "3m07s", "1h05m".
std::string format_duration(double seconds);

class Progress {
 public:
  // `total` > 0 units of work. `terminal`: -1 asks isatty() of `out`, 0 / 1 say. `clock` (seconds,
  // any origin) is for tests.
  Progress(std::string label, int64_t total, bool enabled, std::FILE* out = stderr, int terminal = -1,
           std::function<double()> clock = {});
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `done` units of `total` are done; `detail` is what the line says besides (e.g. "epoch 1/2 step
  // 120/7500 loss 0.5312  402 img/s"). Prints when a line is due.
  void update(int64_t done, const std::string& detail);
  // The last line: `detail` and the time taken (a newline after a live line). Later calls print
  // nothing. Destroyed unfinished (an error, Ctrl-C), a live line stays on screen as it was.
  void finish(const std::string& detail);
  // Removes a live line before other output is printed (nothing to do in a log); the next update
  // draws it again.
  void clear();

  double elapsed() const;

 private:
  void print(const std::string& text, bool final);

  std::string label_;
  int64_t total_;
  bool enabled_, terminal_;
  std::FILE* out_;
  std::function<double()> clock_;
  double start_, last_print_ = -1;
  int64_t last_tenth_ = 0;
  bool live_ = false, finished_ = false;
};

}  // namespace handgrad
