#include <x2sec/runtime/control.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string_view>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace x2sec::runtime {

namespace {

Error io_error(const std::string& what) {
    return Error(ErrorDomain::Io, errno, what + ": " + std::strerror(errno));
}

Status write_all(int fd, const uint8_t* p, size_t n) {
    while (n > 0) {
        ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return io_error("control socket write");
        }
        p += w;
        n -= static_cast<size_t>(w);
    }
    return {};
}

Status read_all(int fd, uint8_t* p, size_t n) {
    while (n > 0) {
        ssize_t r = ::recv(fd, p, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return io_error("control socket read");
        }
        if (r == 0) return Error(ErrorDomain::Io, 0, "control socket closed mid-message");
        p += r;
        n -= static_cast<size_t>(r);
    }
    return {};
}

std::string hex64(uint64_t v) {
    char b[17];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
    return b;
}
std::string hex32(uint32_t v) {
    char b[9];
    std::snprintf(b, sizeof b, "%08x", v);
    return b;
}

}  // namespace

std::string control_dump(const nlohmann::json& j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Status write_frame(int fd, const std::string& payload) {
    if (payload.size() > kMaxControlFrame) return Error(ErrorDomain::Io, 0, "control message too large");
    uint32_t n = static_cast<uint32_t>(payload.size());
    uint8_t hdr[4] = {uint8_t(n >> 24), uint8_t(n >> 16), uint8_t(n >> 8), uint8_t(n)};
    X2SEC_TRY_STATUS(write_all(fd, hdr, 4));
    return write_all(fd, reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
}

Result<std::string> read_frame(int fd, size_t max_size) {
    uint8_t hdr[4];
    X2SEC_TRY_STATUS(read_all(fd, hdr, 4));
    size_t n = (size_t(hdr[0]) << 24) | (size_t(hdr[1]) << 16) | (size_t(hdr[2]) << 8) | hdr[3];
    if (n > max_size)
        return Error(ErrorDomain::Io, 0, "control message of " + std::to_string(n) + " octets exceeds the limit");
    std::string s(n, '\0');
    X2SEC_TRY_STATUS(read_all(fd, reinterpret_cast<uint8_t*>(s.data()), n));
    return s;
}

Result<nlohmann::json> control_request(const std::string& path, const nlohmann::json& request, int timeout_ms) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return io_error("socket");
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (path.size() >= sizeof sa.sun_path) return Error(ErrorDomain::Io, 0, "control socket path too long: " + path);
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
        return io_error("connecting to the x2sec IKE daemon at " + path + " (is `x2sec ike run` running?)");
    X2SEC_TRY_STATUS(write_frame(fd, control_dump(request)));
    // One frame, or (a list-sas reply) frames with "more":true, then the last: their "sas"
    // lists are joined into the first frame's.
    nlohmann::json out;
    size_t total = 0;
    for (size_t frames = 0;; ++frames) {
        X2SEC_TRY(std::string reply, read_frame(fd));
        total += reply.size();
        if (total > kMaxControlReply)
            return Error(ErrorDomain::Io, 0,
                         "reply from the daemon exceeds " + std::to_string(kMaxControlReply) + " octets");
        auto j = nlohmann::json::parse(reply, nullptr, false);
        if (j.is_discarded() || !j.is_object()) return Error(ErrorDomain::Io, 0, "malformed reply from the daemon");
        auto ok = j.find("ok");
        if (ok == j.end() || !ok->is_boolean() || !ok->get<bool>()) {
            auto err = j.find("error");
            return Error(ErrorDomain::Generic, 0,
                         err != j.end() && err->is_string() ? err->get<std::string>() : std::string("request failed"));
        }
        auto more = j.find("more");
        bool has_more = more != j.end() && more->is_boolean() && more->get<bool>();
        if (has_more || frames > 0) {
            auto sas = j.find("sas");
            if (sas == j.end() || !sas->is_array())
                return Error(ErrorDomain::Io, 0, "malformed reply from the daemon: a continued reply without 'sas'");
        }
        if (frames == 0) {
            out = std::move(j);
        } else {
            auto& dst = out["sas"];
            for (auto& s : j["sas"]) dst.push_back(std::move(s));
        }
        if (!has_more) break;
    }
    out.erase("more");
    return out;
}

nlohmann::json sa_to_json(const ike::IkeSaInfo& s, Millis now) {
    auto ts_list = [](const std::vector<TrafficSelector>& v) {
        nlohmann::json a = nlohmann::json::array();
        for (const auto& t : v) a.push_back(t.to_string());
        return a;
    };
    nlohmann::json j;
    j["id"] = s.id;
    j["peer"] = s.peer;
    j["state"] = s.state;
    j["initiator"] = s.initiator;
    j["spi_i"] = hex64(s.spi_i);
    j["spi_r"] = hex64(s.spi_r);
    j["local"] = {{"addr", s.local.addr.to_string()}, {"port", s.local.port}, {"id", s.local_id}};
    j["remote"] = {{"addr", s.remote.addr.to_string()}, {"port", s.remote.port}, {"id", s.remote_id}};
    j["local_auth"] = s.local_auth;
    j["remote_auth"] = s.remote_auth;
    j["encr"] = s.encr;
    j["integ"] = s.integ;
    j["prf"] = s.prf;
    j["dh"] = s.dh;
    j["nat_local"] = s.nat_local;
    j["nat_remote"] = s.nat_remote;
    j["encap"] = s.encap;
    j["established_seconds"] = s.established_at > 0 && now >= s.established_at ? (now - s.established_at) / 1000 : 0;
    j["peer_cert_subject"] = s.peer_cert_subject;
    j["peer_cert_anchor"] = s.peer_cert_anchor;
    nlohmann::json children = nlohmann::json::array();
    for (const auto& c : s.children) {
        nlohmann::json cj;
        cj["name"] = c.name;
        cj["reqid"] = c.reqid;
        cj["state"] = c.state;
        cj["spi_in"] = hex32(c.spi_in);
        cj["spi_out"] = hex32(c.spi_out);
        cj["cipher"] = c.cipher;
        cj["esn"] = c.esn;
        cj["pfs"] = c.pfs;
        cj["ts_local"] = ts_list(c.ts_local);
        cj["ts_remote"] = ts_list(c.ts_remote);
        cj["established_seconds"] =
            c.established_at > 0 && now >= c.established_at ? (now - c.established_at) / 1000 : 0;
        children.push_back(std::move(cj));
    }
    j["children"] = std::move(children);
    return j;
}

nlohmann::json sas_to_json(const std::vector<ike::IkeSaInfo>& sas, Millis now) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& s : sas) out.push_back(sa_to_json(s, now));
    return out;
}

std::vector<std::string> list_sas_payloads(const std::vector<ike::IkeSaInfo>& sas, Millis now, size_t chunk_octets) {
    constexpr std::string_view kHead = R"({"ok":true,"sas":[)";
    std::vector<std::string> out;
    std::string cur(kHead);
    size_t in_cur = 0;
    for (const auto& s : sas) {
        std::string one = control_dump(sa_to_json(s, now));
        if (in_cur > 0 && cur.size() - kHead.size() + one.size() > chunk_octets) {
            cur += R"(],"more":true})";
            out.push_back(std::move(cur));
            cur = kHead;
            in_cur = 0;
        }
        if (in_cur > 0) cur += ',';
        cur += one;
        ++in_cur;
    }
    cur += "]}";
    out.push_back(std::move(cur));
    return out;
}

std::string format_sas(const nlohmann::json& sas) {
    std::ostringstream os;
    auto str = [](const nlohmann::json& j, const char* k) {
        return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
    };
    for (const auto& s : sas) {
        bool init = s.value("initiator", false);
        const auto& l = s["local"];
        const auto& r = s["remote"];
        os << str(s, "peer") << ": #" << s.value("id", uint64_t(0)) << ", " << str(s, "state") << ", IKEv2, "
           << str(s, "spi_i") << "_i" << (init ? "*" : "") << " " << str(s, "spi_r") << "_r" << (init ? "" : "*")
           << "\n";
        os << "  local  '" << str(l, "id") << "' @ " << str(l, "addr") << "[" << l.value("port", 0) << "]"
           << (s.value("nat_local", false) ? " [NAT]" : "") << "\n";
        os << "  remote '" << str(r, "id") << "' @ " << str(r, "addr") << "[" << r.value("port", 0) << "]"
           << (s.value("nat_remote", false) ? " [NAT]" : "") << "\n";
        std::string algs = str(s, "encr");
        if (!str(s, "integ").empty()) algs += "/" + str(s, "integ");
        if (!str(s, "prf").empty()) algs += "/" + str(s, "prf");
        if (!str(s, "dh").empty()) algs += "/" + str(s, "dh");
        if (!algs.empty()) os << "  " << algs << "\n";
        if (str(s, "state") == "ESTABLISHED" || s.value("established_seconds", 0) > 0)
            os << "  established " << s.value("established_seconds", 0) << "s ago\n";
        if (!str(s, "local_auth").empty() || !str(s, "remote_auth").empty())
            os << "  auth local: " << str(s, "local_auth") << ", remote: " << str(s, "remote_auth") << "\n";
        if (!str(s, "peer_cert_subject").empty())
            os << "  remote cert: \"" << str(s, "peer_cert_subject") << "\" via anchor '" << str(s, "peer_cert_anchor")
               << "'\n";
        for (const auto& c : s.value("children", nlohmann::json::array())) {
            os << "  " << str(c, "name") << ": #" << c.value("reqid", 0) << ", reqid " << c.value("reqid", 0) << ", "
               << str(c, "state") << ", TUNNEL" << (s.value("encap", false) ? "-in-UDP" : "")
               << ", ESP:" << str(c, "cipher") << (c.value("esn", false) ? "/ESN" : "")
               << (str(c, "pfs").empty() ? "" : "/" + str(c, "pfs")) << "\n";
            os << "    installed " << c.value("established_seconds", 0) << "s ago\n";
            os << "    in  " << str(c, "spi_in") << "\n";
            os << "    out " << str(c, "spi_out") << "\n";
            auto ts = [&](const char* k) {
                std::string t;
                for (const auto& x : c.value(k, nlohmann::json::array()))
                    t += (t.empty() ? "" : " ") + x.get<std::string>();
                return t;
            };
            os << "    local  " << ts("ts_local") << "\n";
            os << "    remote " << ts("ts_remote") << "\n";
        }
    }
    return os.str();
}

nlohmann::json event_to_json(const ike::Event& e, uint64_t seq) {
    return {{"seq", seq},     {"kind", ike::to_string(e.kind)},
            {"peer", e.peer}, {"ike_sa_id", e.ike_sa_id},
            {"code", e.code}, {"detail", e.detail}};
}

}  // namespace x2sec::runtime
