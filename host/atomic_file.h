// Files handgrad writes appear whole or not at all: the bytes go to PATH.tmp.<pid> beside the
// target, are flushed to the disk (fsync), and the temporary is renamed over PATH (then the
// folder is synced too, so the rename itself survives a crash). A run killed mid-write leaves
// its temporary behind; the next write of the same PATH removes such temporaries whose
// process is gone.
#pragma once
#include <string>

namespace handgrad {

void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace handgrad
