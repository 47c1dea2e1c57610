#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <x2sec/common/file.hpp>

namespace x2sec {
namespace {
Error io_error(const std::string& what, const std::string& path) {
    return Error(ErrorDomain::Io, errno, what + " " + path + ": " + std::strerror(errno));
}
std::string dir_of(const std::string& path) {
    auto slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}
}  // namespace

Status write_file_atomic(const std::string& path, BytesView data, mode_t mode) {
    std::string tmp = path + ".tmp." + std::to_string(::getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) return io_error("cannot create", tmp);
    // The umask may have narrowed the mode; widen it back only to what was asked.
    if (::fchmod(fd, mode) != 0) {
        auto e = io_error("cannot chmod", tmp);
        ::close(fd);
        ::unlink(tmp.c_str());
        return e;
    }
    size_t off = 0;
    while (off < data.size()) {
        ssize_t n = ::write(fd, data.data() + off, data.size() - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            auto e = io_error("cannot write", tmp);
            ::close(fd);
            ::unlink(tmp.c_str());
            return e;
        }
        off += static_cast<size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        auto e = io_error("cannot flush", tmp);
        ::unlink(tmp.c_str());
        return e;
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        auto e = io_error("cannot rename onto", path);
        ::unlink(tmp.c_str());
        return e;
    }
    int dfd = ::open(dir_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
    return {};
}

Result<Bytes> read_file(const std::string& path, size_t max_size) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return io_error("cannot open", path);
    Bytes out;
    uint8_t buf[16384];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR) continue;
            auto e = io_error("cannot read", path);
            ::close(fd);
            return e;
        }
        if (n == 0) break;
        if (out.size() + static_cast<size_t>(n) > max_size) {
            ::close(fd);
            return Error(ErrorDomain::Io, EFBIG, path + ": larger than " + std::to_string(max_size) + " bytes");
        }
        out.insert(out.end(), buf, buf + n);
    }
    ::close(fd);
    return out;
}

Result<std::string> read_text_file(const std::string& path, size_t max_size) {
    auto r = read_file(path, max_size);
    if (!r) return r.error();
    return std::string(r->begin(), r->end());
}

}  // namespace x2sec
