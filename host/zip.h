// A minimal zip writer (stored entries, CRC-32 from zlib): enough to bundle the report's
// deliverables into one archive that any unzip opens. Written whole or not at all.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace handgrad {

// entries: (name inside the archive, path of the file to store).
void write_zip(const std::string& path, const std::vector<std::pair<std::string, std::string>>& entries);

}  // namespace handgrad
