// Files that must never be half-written: write to a temporary file in the same directory,
// fsync, rename over the target, fsync the directory.  Private keys are written with mode
// 0600 from the start (the temporary file is created with that mode).
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
