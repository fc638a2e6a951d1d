#include "host/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

namespace handgrad {

namespace {

constexpr double kTerminalInterval = 0.2;  // s between redraws of a live line
constexpr double kLogMinInterval = 5;      // a log line per tenth of the work, but not more often
constexpr double kLogMaxInterval = 20;     // and never a longer silence than this while work goes on

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The terminal's width in columns (0: unknown).
int terminal_columns(std::FILE* out) {
  winsize ws{};
  return ::ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 ? ws.ws_col : 0;
}

}  // namespace

std::string format_duration(double s) {
  char b[32];
  s = std::max(s, 0.0);
  if (s < 60) std::snprintf(b, sizeof b, "%.0fs", s);
  else if (s < 3600) std::snprintf(b, sizeof b, "%dm%02ds", int(s / 60), int(s) % 60);
  else std::snprintf(b, sizeof b, "%dh%02dm", int(s / 3600), int(s / 60) % 60);
  return b;
}

Progress::Progress(std::string label, int64_t total, bool enabled, std::FILE* out, int terminal,
                   std::function<double()> clock)
    : label_(std::move(label)),
      total_(std::max<int64_t>(total, 1)),
      enabled_(enabled),
      terminal_(terminal < 0 ? ::isatty(fileno(out)) == 1 : terminal == 1),
      out_(out),
      clock_(clock ? std::move(clock) : steady_seconds),
      start_(clock_()) {
  if (!terminal_) last_print_ = 0;  // a log's first line comes after the first tenth or 20 s
}

Progress::~Progress() {
  if (live_) std::fputs("\n", out_);  // an interrupted run leaves its last state on screen
}

double Progress::elapsed() const { return clock_() - start_; }

void Progress::update(int64_t done, const std::string& detail) {
  if (!enabled_ || finished_) return;
  const double now = elapsed();
  const int64_t tenth = std::clamp<int64_t>(done, 0, total_) * 10 / total_;
  const double since = now - last_print_;
  const bool due = terminal_ ? (last_print_ < 0 || since >= kTerminalInterval)
                             : ((tenth > last_tenth_ && since >= kLogMinInterval) || since >= kLogMaxInterval);
  if (!due) return;
  last_print_ = now;
  last_tenth_ = tenth;
  const std::string eta = done > 0 ? format_duration((total_ - std::min(done, total_)) * now / done) : "-";
  print("[" + label_ + "] " + detail + "  ETA " + eta, false);
}

void Progress::finish(const std::string& detail) {
  if (!enabled_ || finished_) return;
  finished_ = true;
  print("[" + label_ + "] " + detail + "  done in " + format_duration(elapsed()), true);
}

void Progress::clear() {
  if (!live_) return;
  std::fputs("\r\033[K", out_);
  std::fflush(out_);
  live_ = false;
  last_print_ = -1;
}

void Progress::print(const std::string& text, bool final) {
  if (!terminal_) {
    std::fprintf(out_, "%s\n", text.c_str());
    std::fflush(out_);
    return;
  }
  // A line longer than the terminal wraps, and "\r" then redraws only its last part.
  const int columns = terminal_columns(out_);
  const std::string shown = columns > 1 && text.size() >= size_t(columns) ? text.substr(0, columns - 1) : text;
  std::fprintf(out_, "\r%s\033[K%s", shown.c_str(), final ? "\n" : "");
  std::fflush(out_);
  live_ = !final;
}

}  // namespace handgrad
