// Files handgrad writes appear whole or not at all: the bytes go to a temporary beside the target
// (".handgrad-<hash of the name>.<pid>.tmp", created with O_EXCL | O_NOFOLLOW, so a short name
// whatever the target's length), are flushed to the disk (fsync), and the temporary is renamed
// over the target (then the folder is synced too, so the rename itself survives a crash). A run
// killed mid-write leaves its temporary behind; the next write of the same target removes such
// temporaries whose process is gone (only ours: the name says whose).
//
// Targets that are not regular files are never replaced: a symbolic link is followed (the file it
// points to is replaced, the link stays), a character device or a FIFO is written through
// (/dev/null, /dev/stdout, a pipe), anything else (a folder, a socket, a block device) is refused.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace handgrad {

void write_file_atomic(const std::string& path, const std::string& bytes);
// The same, from pieces written one after another (no joined copy of a large payload).
void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces);

// True when this process has written `path` through write_file_atomic (the report's archive takes
// only what the run wrote).
bool written_by_this_process(const std::string& path);

// Before long work: is `path` a file we can write? Refuses a missing folder, a folder as the
// target, or a place that cannot be written (a UserError naming `what`, e.g.
// "--save-checkpoint"), and leaves nothing behind.
void check_output_file(const std::string& path, const char* what);
// The same for a folder that outputs will go into (created when missing).
void check_output_dir(const std::string& dir, const char* what);

}  // namespace handgrad
