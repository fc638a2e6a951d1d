#include "host/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>

#include "kernels/error.h"

namespace handgrad {

namespace fs = std::filesystem;

namespace {

// ".handgrad-<FNV-1a of the target's name>.": the temporaries of one target, whatever its length.
std::string temp_prefix(const fs::path& target) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : target.filename().string()) h = (h ^ c) * 1099511628211ull;
  char buf[40];
  std::snprintf(buf, sizeof buf, ".handgrad-%016llx.", static_cast<unsigned long long>(h));
  return buf;
}

fs::path temp_path(const fs::path& target, const std::string& tag) {
  return target.parent_path() / (temp_prefix(target) + tag + ".tmp");
}

// Removes this target's temporaries whose writer no longer runs (a run killed mid-write).
void remove_stale_temporaries(const fs::path& target) {
  const fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  const std::string prefix = temp_prefix(target);
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() + 4 || name.compare(0, prefix.size(), prefix) != 0 ||
        name.compare(name.size() - 4, 4, ".tmp") != 0)
      continue;
    const std::string pid_text = name.substr(prefix.size(), name.size() - prefix.size() - 4);
    if (pid_text.empty() || pid_text.size() > 9 || pid_text.find_first_not_of("0123456789") != std::string::npos)
      continue;
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH) {
      std::error_code rm;
      fs::remove(it->path(), rm);
    }
  }
}

std::mutex g_written_mutex;
std::set<std::string> g_written;  // absolute, normalised paths

std::string registry_key(const fs::path& p) { return fs::absolute(p).lexically_normal().string(); }

void sync_dir(const fs::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: not every file system lets a folder be opened
  ::fsync(fd);
  ::close(fd);
}

// Where the bytes for `path` go: the file at the end of its symbolic links, and whether it is
// written through in place (a character device, a FIFO) rather than replaced.
struct Target {
  fs::path path;
  bool write_through = false;
};

Target resolve_target(const std::string& path) {
  Target t{fs::path(path), false};
  std::error_code ec;
  for (int hops = 0; fs::is_symlink(fs::symlink_status(t.path, ec)); ++hops) {
    if (hops == 40) throw UserError(cat(path, ": too many levels of symbolic links"));
    const fs::path link = fs::read_symlink(t.path, ec);
    if (ec) throw UserError(cat(path, ": cannot read the symbolic link (", ec.message(), ")"));
    t.path = link.is_absolute() ? link : t.path.parent_path() / link;
  }
  const fs::file_status st = fs::status(t.path, ec);
  if (!fs::exists(st) || fs::is_regular_file(st)) return t;
  if (fs::is_character_file(st) || fs::is_fifo(st)) {
    t.write_through = true;
    return t;
  }
  if (fs::is_directory(st)) throw UserError(cat(path, ": is a folder, not a file"));
  throw UserError(cat(path, ": is not a regular file (a socket or a block device): refusing to replace it"));
}

// Writes every piece to fd; returns 0 or the first errno.
int write_all(int fd, const std::vector<std::string_view>& pieces) {
  for (std::string_view piece : pieces)
    for (size_t done = 0; done < piece.size();) {
      const ssize_t w = ::write(fd, piece.data() + done, piece.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return w < 0 ? errno : EIO;
      done += static_cast<size_t>(w);
    }
  return 0;
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic(path, std::vector<std::string_view>{bytes});
}

void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces) {
  const Target target = resolve_target(path);
  if (target.write_through) {
    const int fd = ::open(target.path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) throw UserError(cat(path, ": cannot write (", std::strerror(errno), ")"));
    int err = write_all(fd, pieces);
    if (::close(fd) != 0 && !err) err = errno;
    if (err) throw UserError(cat(path, ": write failed (", std::strerror(err), ")"));
    return;
  }
  remove_stale_temporaries(target.path);
  const fs::path tmp = temp_path(target.path, std::to_string(::getpid()));
  ::unlink(tmp.c_str());  // a temporary with our pid is one a dead process left (pids are reused)
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) throw UserError(cat(path, ": cannot write (", std::strerror(errno), ")"));
  int err = write_all(fd, pieces);
  if (!err && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && !err) err = errno;
  if (err) {
    ::unlink(tmp.c_str());
    throw UserError(cat(path, ": write failed (", std::strerror(err), ")"));
  }
  if (::rename(tmp.c_str(), target.path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw UserError(cat(path, ": cannot rename the finished file into place (", std::strerror(e), ")"));
  }
  sync_dir(target.path.parent_path());
  std::lock_guard<std::mutex> lock(g_written_mutex);
  g_written.insert(registry_key(path));
}

bool written_by_this_process(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_written_mutex);
  return g_written.count(registry_key(path)) > 0;
}

namespace {

// Can a file be created in `dir`? A temporary of ours, created and removed at once.
void probe_writable_dir(const fs::path& dir, const std::string& shown, const char* what) {
  const fs::path probe = temp_path(dir / "probe", cat("probe", ::getpid()));
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) throw UserError(cat(what, " ", shown, ": cannot write there (", std::strerror(errno), ")"));
  ::close(fd);
  ::unlink(probe.c_str());
}

void create_folder(const fs::path& dir, const std::string& shown, const char* what) {
  if (dir.empty()) return;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir, ec))
    throw UserError(cat(what, " ", shown, ": cannot create the folder ", dir.string(), " (",
                        ec ? ec.message() : "a file of that name is in the way", ")"));
}

}  // namespace

void check_output_file(const std::string& path, const char* what) {
  if (path.empty()) return;  // an optional output that was not asked for
  const Target t = resolve_target(path);
  if (!t.write_through) {
    const std::string name = t.path.filename().string();
    HG_REQUIRE(!name.empty() && name != "." && name != "..", what, " ", path, ": names a folder, not a file");
    const long name_max = ::pathconf(t.path.parent_path().empty() ? "." : t.path.parent_path().c_str(), _PC_NAME_MAX);
    HG_REQUIRE(static_cast<long>(name.size()) <= (name_max > 0 ? name_max : 255), what, " ", path,
               ": the file name is longer than the file system allows (", name.size(), " bytes)");
    // An existing file that may not be replaced (chattr +i): found now, not at the rename.
    const int fd = ::open(t.path.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) ::close(fd);
    else if (errno == EPERM) throw UserError(cat(what, " ", path, ": may not be replaced (", std::strerror(errno), ")"));
  }
  const fs::path dir = t.path.parent_path().empty() ? fs::path(".") : t.path.parent_path();
  std::error_code ec;
  if (!t.write_through && !fs::is_directory(dir, ec))
    throw UserError(cat(what, " ", path, ": the folder ", dir.string(), " does not exist"));
  if (t.write_through) {
    if (::access(t.path.c_str(), W_OK) != 0)
      throw UserError(cat(what, " ", path, ": cannot write (", std::strerror(errno), ")"));
    return;
  }
  probe_writable_dir(dir, path, what);
}

void check_output_dir(const std::string& dir, const char* what) {
  if (dir.empty()) return;
  create_folder(fs::path(dir), dir, what);
  probe_writable_dir(fs::path(dir), dir, what);
}

}  // namespace handgrad
