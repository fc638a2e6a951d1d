#include "host/zip.h"

#include <zlib.h>

#include <fstream>
#include <iterator>

#include "host/atomic_file.h"
#include "kernels/error.h"

namespace handgrad {

namespace {
void put(std::string& b, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) b += static_cast<char>((v >> (8 * i)) & 0xff);
}
}  // namespace

void write_zip(const std::string& path, const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, central;
  for (const auto& [name, file] : entries) {
    std::ifstream f(file, std::ios::binary);
    if (!f) throw UserError(cat(path, ": cannot read ", file, " to archive it"));
    const std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    HG_REQUIRE(data.size() < 0xffffffffu && out.size() < 0xffffffffu, path, ": archive over 4 GiB");
    const uint32_t crc = static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(data.data()),
                                                     static_cast<uInt>(data.size())));
    const uint64_t offset = out.size();
    // Local file header: version 2.0, no flags, stored, DOS time/date 1980-01-01.
    put(out, 0x04034b50, 4), put(out, 20, 2), put(out, 0, 2), put(out, 0, 2), put(out, 0, 2), put(out, 0x21, 2);
    put(out, crc, 4), put(out, data.size(), 4), put(out, data.size(), 4), put(out, name.size(), 2), put(out, 0, 2);
    out += name;
    out += data;
    put(central, 0x02014b50, 4), put(central, 20, 2), put(central, 20, 2), put(central, 0, 2), put(central, 0, 2);
    put(central, 0, 2), put(central, 0x21, 2), put(central, crc, 4), put(central, data.size(), 4);
    put(central, data.size(), 4), put(central, name.size(), 2), put(central, 0, 2), put(central, 0, 2);
    put(central, 0, 2), put(central, 0, 2), put(central, 0, 4), put(central, offset, 4);
    central += name;
  }
  const uint64_t dir_offset = out.size();
  out += central;
  put(out, 0x06054b50, 4), put(out, 0, 2), put(out, 0, 2), put(out, entries.size(), 2), put(out, entries.size(), 2);
  put(out, central.size(), 4), put(out, dir_offset, 4), put(out, 0, 2);
  write_file_atomic(path, out);
}

}  // namespace handgrad
