// Files that must never be half-written: write to a uniquely named temporary file created
// exclusively (mkostemp, O_EXCL) in the same directory, fsync it, rename it over the target,
// fsync the directory.  The temporary file is created 0600 and set to `mode` before anything is
// written, so a private key (0600) is never readable by others, not even for an instant; a
// pre-planted file or symlink cannot be followed, and concurrent writers never share a name.
#pragma once

#include <string>
#include <sys/types.h>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>

namespace x2sec {

Status write_file_atomic(const std::string& path, BytesView data, mode_t mode = 0644);
inline Status write_file_atomic(const std::string& path, std::string_view text, mode_t mode = 0644) {
    return write_file_atomic(path, as_bytes(text), mode);
}
Result<Bytes> read_file(const std::string& path, size_t max_size = 64 * 1024 * 1024);
Result<std::string> read_text_file(const std::string& path, size_t max_size = 64 * 1024 * 1024);

}  // namespace x2sec
