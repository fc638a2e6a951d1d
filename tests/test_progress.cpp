// Progress lines: how often they come in a log and on a terminal, what the last one says, and
// that a disabled one is silent. A fake clock drives them; the lines go to a temporary file.
#include <gtest/gtest.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "host/progress.h"

using handgrad::format_duration;
using handgrad::Progress;

namespace {

std::string contents(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  for (int c; (c = std::fgetc(f)) != EOF;) s.push_back(static_cast<char>(c));
  return s;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::stringstream ss(s);
  for (std::string l; std::getline(ss, l);) lines.push_back(l);
  return lines;
}

// Runs `total` units of work, one unit every `step_s` seconds of the fake clock, into a log (not
// a terminal). Returns the lines and, in `times`, when each was printed.
std::vector<std::string> run_log(int64_t total, double step_s, std::vector<double>* times) {
  std::FILE* f = std::tmpfile();
  double now = 0;
  {
    Progress p("work", total, true, f, /*terminal=*/0, [&] { return now; });
    size_t printed = 0;
    for (int64_t done = 1; done <= total; ++done) {
      now = done * step_s;
      if (done == total) p.finish("all of it");
      else p.update(done, "unit " + std::to_string(done));
      const size_t n = split_lines(contents(f)).size();
      for (; printed < n; ++printed) times->push_back(now);
      std::fseek(f, 0, SEEK_END);
    }
  }
  const std::vector<std::string> lines = split_lines(contents(f));
  std::fclose(f);
  return lines;
}

}  // namespace

TEST(Progress, LogGetsALineEachTenth) {
  std::vector<double> t;
  const std::vector<std::string> lines = run_log(100, 1.0, &t);  // 100 s of work
  ASSERT_EQ(lines.size(), 10u);                                  // 10%, ..., 90% and the last line
  for (size_t i = 0; i + 1 < lines.size(); ++i) {
    EXPECT_DOUBLE_EQ(t[i], 10.0 * (i + 1));
    EXPECT_EQ(lines[i].rfind("[work] unit ", 0), 0u) << lines[i];
    EXPECT_NE(lines[i].find("  ETA "), std::string::npos) << lines[i];
  }
  EXPECT_EQ(lines[0], "[work] unit 10  ETA 1m30s");
  EXPECT_EQ(lines.back(), "[work] all of it  done in 1m40s");
}

TEST(Progress, SlowWorkInALogIsNeverSilentForLong) {
  std::vector<double> t;
  const std::vector<std::string> lines = run_log(1000, 1.0, &t);  // a tenth takes 100 s
  ASSERT_GE(lines.size(), 40u);
  double last = 0;
  for (double x : t) {
    EXPECT_LE(x - last, 20.0);
    last = x;
  }
}

TEST(Progress, FastWorkInALogIsNotChatty) {
  std::vector<double> t;
  const std::vector<std::string> lines = run_log(100, 0.1, &t);  // 10 s of work
  ASSERT_EQ(lines.size(), 2u);                                   // one line at 5 s, and the last one
  EXPECT_DOUBLE_EQ(t[0], 5.0);
  EXPECT_EQ(lines[1], "[work] all of it  done in 10s");
}

TEST(Progress, TerminalRedrawsOneLineAtMostFiveTimesASecond) {
  std::FILE* f = std::tmpfile();
  double now = 0;
  {
    Progress p("run", 1000, true, f, /*terminal=*/1, [&] { return now; });
    for (int i = 1; i < 1000; ++i) {
      now = i * 0.01;  // 100 updates a second for ~10 s
      p.update(i, "step " + std::to_string(i));
    }
    p.clear();
    now = 10;
    p.finish("step 1000");
  }
  const std::string out = contents(f);
  std::fclose(f);
  size_t redraws = 0;
  for (size_t pos = out.find('\r'); pos != std::string::npos; pos = out.find('\r', pos + 1)) ++redraws;
  EXPECT_GE(redraws, 45u);  // ~5 a second, the clear and the last line
  EXPECT_LE(redraws, 55u);
  EXPECT_NE(out.find("\r\033[K\r[run] step 1000  done in 10s\033[K\n"), std::string::npos);  // cleared, then the end
  EXPECT_EQ(out.find('\n'), out.size() - 1);  // one line on screen, ended once
}

TEST(Progress, DisabledPrintsNothing) {
  std::FILE* f = std::tmpfile();
  double now = 0;
  {
    Progress p("quiet", 10, false, f, 0, [&] { return now; });
    for (int i = 1; i <= 10; ++i) now = i * 30, p.update(i, "x");
    p.finish("x");
  }
  EXPECT_EQ(contents(f), "");
  std::fclose(f);
}

TEST(Progress, InterruptedLiveLineStaysOnScreen) {
  std::FILE* f = std::tmpfile();
  {
    Progress p("cut", 10, true, f, 1, [] { return 0.0; });
    p.update(3, "step 3");
  }  // destroyed unfinished, as by an exception
  EXPECT_EQ(contents(f), "\r[cut] step 3  ETA 0s\033[K\n");
  std::fclose(f);
}

TEST(Progress, DurationsReadAsTime) {
  EXPECT_EQ(format_duration(0), "0s");
  EXPECT_EQ(format_duration(42.4), "42s");
  EXPECT_EQ(format_duration(187), "3m07s");
  EXPECT_EQ(format_duration(3900), "1h05m");
  EXPECT_EQ(format_duration(-5), "0s");
}
