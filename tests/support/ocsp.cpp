// OCSP fixtures, see x2sec/test/ocsp.hpp.
#include <openssl/ocsp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <thread>
#include <x2sec/common/file.hpp>
#include <x2sec/test/ocsp.hpp>
#include <x2sec/test/ports.hpp>

namespace x2sec::test {

namespace {

std::string read_text(const std::string& path) {
    std::ifstream f(path);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write(const std::string& path, std::string_view text, mode_t mode = 0644) {
    if (!write_file_atomic(path, text, mode).ok()) throw std::runtime_error("cannot write " + path);
}

}  // namespace

OpensslOcspResponder::OpensslOcspResponder(const std::string& ca_pem, const std::string& signer_pem,
                                           BytesView signer_key_pem, const std::vector<Entry>& index) {
    char t[] = "/tmp/x2sec-ocsp-XXXXXX";
    if (::mkdtemp(t) == nullptr) throw std::runtime_error("mkdtemp /tmp/x2sec-ocsp-XXXXXX");
    m_dir = t;
    write(m_dir + "/ca.pem", ca_pem);
    write(m_dir + "/rsigner.pem", signer_pem);
    if (!write_file_atomic(m_dir + "/rkey.pem", signer_key_pem, 0600).ok())
        throw std::runtime_error("cannot write " + m_dir + "/rkey.pem");
    std::string text;
    for (const auto& e : index)
        text += (e.revoked ? "R\t391231235959Z\t240101000000Z,keyCompromise\t" : "V\t391231235959Z\t\t") +
                e.serial_hex + "\tunknown\t" + e.subject + "\n";
    write(m_dir + "/index.txt", text);
    write(m_dir + "/index.txt.attr", "unique_subject = no\n");
}

OpensslOcspResponder::~OpensslOcspResponder() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(m_dir, ec);
}

bool OpensslOcspResponder::available() {
    return std::system("command -v openssl >/dev/null 2>&1") == 0;
}

std::string OpensslOcspResponder::url() const {
    return "http://127.0.0.1:" + std::to_string(m_port) + "/";
}

std::string OpensslOcspResponder::start(unsigned slot) {
    std::string why;
    if (m_port != 0) return start_on(m_port, why) ? "" : why;  // a restart: the certificates name this port
    auto port = start_on_free_port(slot, [&](uint16_t p) { return start_on(p, why); });
    if (!port) return why;
    m_port = *port;
    return "";
}

bool OpensslOcspResponder::start_on(uint16_t port, std::string& why) {
    const std::string log = m_dir + "/ocsp.log";
    std::error_code ec;
    std::filesystem::remove(log, ec);
    const std::string p = std::to_string(port);
    const std::string index = m_dir + "/index.txt", rsigner = m_dir + "/rsigner.pem", rkey = m_dir + "/rkey.pem",
                      ca = m_dir + "/ca.pem";
    m_pid = ::fork();
    if (m_pid == 0) {
        if (std::freopen(log.c_str(), "w", stderr) == nullptr) _exit(126);
        ::execlp("openssl", "openssl", "ocsp", "-index", index.c_str(), "-port", p.c_str(), "-rsigner", rsigner.c_str(),
                 "-rkey", rkey.c_str(), "-CA", ca.c_str(), "-nmin", "10", "-ignore_err", "-out", "/dev/null", nullptr);
        _exit(127);
    }
    if (m_pid < 0) {
        why = "fork failed";
        return false;
    }
    // Ready once it says so (a probing connect would hold up the single-threaded responder); an
    // exit (e.g. "Address already in use") ends the wait at once.
    for (int i = 0; i < 200; ++i) {
        if (read_text(log).find("waiting for OCSP client connections") != std::string::npos) return true;
        int status = 0;
        if (::waitpid(m_pid, &status, WNOHANG) == m_pid) {
            m_pid = -1;
            why = "openssl ocsp -port " + p + " exited: " + read_text(log);
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    stop();
    why = "openssl ocsp -port " + p + " did not start within 10 s: " + read_text(log);
    return false;
}

void OpensslOcspResponder::stop() {
    if (m_pid > 0) {
        ::kill(m_pid, SIGTERM);
        ::waitpid(m_pid, nullptr, 0);
        m_pid = -1;
    }
}

Bytes make_ocsp_response(X509* cert, X509* issuer, int status, X509* signer_cert, EVP_PKEY* signer_key,
                         int64_t this_update, int64_t next_update, int64_t revoked_at) {
    OCSP_CERTID* id = OCSP_cert_to_id(EVP_sha1(), cert, issuer);
    OCSP_BASICRESP* bs = OCSP_BASICRESP_new();
    ASN1_TIME* tu = ASN1_TIME_set(nullptr, static_cast<time_t>(this_update));
    ASN1_TIME* nu = ASN1_TIME_set(nullptr, static_cast<time_t>(next_update));
    ASN1_TIME* rt = ASN1_TIME_set(nullptr, static_cast<time_t>(revoked_at));
    const bool revoked = status == V_OCSP_CERTSTATUS_REVOKED;
    OCSP_RESPONSE* resp = nullptr;
    if (id != nullptr && bs != nullptr && tu != nullptr && nu != nullptr && rt != nullptr &&
        OCSP_basic_add1_status(bs, id, status, revoked ? OCSP_REVOKED_STATUS_KEYCOMPROMISE : 0, revoked ? rt : nullptr,
                               tu, nu) != nullptr &&
        OCSP_basic_sign(bs, signer_cert, signer_key, EVP_sha256(), nullptr, 0) == 1)
        resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
    unsigned char* der = nullptr;
    const int n = resp != nullptr ? i2d_OCSP_RESPONSE(resp, &der) : 0;
    Bytes out(der, der + (n > 0 ? n : 0));
    OPENSSL_free(der);
    OCSP_RESPONSE_free(resp);
    OCSP_BASICRESP_free(bs);
    OCSP_CERTID_free(id);
    ASN1_TIME_free(tu);
    ASN1_TIME_free(nu);
    ASN1_TIME_free(rt);
    return out;
}

}  // namespace x2sec::test
