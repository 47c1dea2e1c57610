#include <cerrno>
#include <cstdlib>
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
    // A unique name in the target's directory, created exclusively (mkostemp: O_CREAT|O_EXCL, mode 0600):
    // nobody can pre-create, link or race it, and concurrent writers (threads or processes) never share it.
    const std::string dir = dir_of(path);
    auto slash = path.rfind('/');
    std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
    std::string tmp =
        (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) + "." + base + ".tmp.XXXXXX";
    int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
    if (fd < 0) return io_error("cannot create a temporary file for", path);
    auto fail = [&](const char* what) {
        auto e = io_error(what, tmp);
        ::close(fd);
        ::unlink(tmp.c_str());
        return e;
    };
    // The file was created 0600 (never wider than a private key's mode); set exactly the mode asked
    // for before any byte is written and before it becomes visible under the final name.
    if (::fchmod(fd, mode) != 0) return fail("cannot chmod");
    size_t off = 0;
    while (off < data.size()) {
        ssize_t n = ::write(fd, data.data() + off, data.size() - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return fail("cannot write");
        }
        off += static_cast<size_t>(n);
    }
    if (::fsync(fd) != 0) return fail("cannot flush");
    if (::close(fd) != 0) {
        auto e = io_error("cannot close", tmp);
        ::unlink(tmp.c_str());
        return e;
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        auto e = io_error("cannot rename onto", path);
        ::unlink(tmp.c_str());
        return e;
    }
    // The rename is durable only once the directory entry is on disk.
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return io_error("cannot open directory to flush", dir);
    if (::fsync(dfd) != 0) {
        auto e = io_error("cannot flush directory", dir);
        ::close(dfd);
        return e;
    }
    ::close(dfd);
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
