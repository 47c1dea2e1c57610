// Errors are values: Result<T> carries either a T or an Error (a code within a domain plus a
// human-readable detail).  Engines and parsers never throw; exceptions stay at the edges.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace x2sec {

// Error domains keep codes from different protocols apart; the code is the protocol's own
// number where one exists (an IKEv2 Notify type, a CMP PKIFailureInfo bit, ...).
enum class ErrorDomain {
    Generic,
    Codec,   // malformed input, see CodecError
    Crypto,  // OpenSSL failure; detail carries the drained error queue
    Ike,     // code = IKEv2 Notify error type (RFC 7296 3.10.1)
    Esp,
    Pki,
    Cmp,  // code = PKIFailureInfo bit
    Kds,
    Config,
    Io,
};

class Error {
public:
    Error() = default;
    Error(ErrorDomain domain, int code, std::string detail)
        : m_domain(domain), m_code(code), m_detail(std::move(detail)) {}
    explicit Error(std::string detail) : m_detail(std::move(detail)) {}

    ErrorDomain domain() const { return m_domain; }
    int code() const { return m_code; }
    const std::string& detail() const { return m_detail; }
    // "domain/code: detail", for logs and CLI output.
    std::string to_string() const;

    // Prefix context ("parsing SA payload: ...") while keeping domain and code.
    Error& context(std::string_view what) {
        m_detail = std::string(what) + ": " + m_detail;
        return *this;
    }

private:
    ErrorDomain m_domain = ErrorDomain::Generic;
    int m_code = 0;
    std::string m_detail;
};

const char* to_string(ErrorDomain d);

template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : m_v(std::in_place_index<0>, std::move(value)) {}
    Result(Error error) : m_v(std::in_place_index<1>, std::move(error)) {}

    bool ok() const { return m_v.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & {
        assert(ok());
        return std::get<0>(m_v);
    }
    const T& value() const& {
        assert(ok());
        return std::get<0>(m_v);
    }
    T&& value() && {
        assert(ok());
        return std::get<0>(std::move(m_v));
    }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const Error& error() const& {
        assert(!ok());
        return std::get<1>(m_v);
    }
    Error&& error() && {
        assert(!ok());
        return std::get<1>(std::move(m_v));
    }

    T value_or(T fallback) const& { return ok() ? std::get<0>(m_v) : std::move(fallback); }

private:
    std::variant<T, Error> m_v;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : m_error(std::move(error)), m_ok(false) {}
    bool ok() const { return m_ok; }
    explicit operator bool() const { return m_ok; }
    const Error& error() const {
        assert(!m_ok);
        return m_error;
    }

private:
    Error m_error;
    bool m_ok = true;
};

using Status = Result<void>;

inline Status ok_status() {
    return {};
}

}  // namespace x2sec

// Propagate an error: X2SEC_TRY(auto v, expr);  or  X2SEC_TRY_STATUS(expr);
#define X2SEC_CONCAT_INNER(a, b) a##b
#define X2SEC_CONCAT(a, b) X2SEC_CONCAT_INNER(a, b)
#define X2SEC_TRY_IMPL(tmp, decl, expr)           \
    auto tmp = (expr);                            \
    if (!tmp.ok()) return std::move(tmp).error(); \
    decl = std::move(tmp).value()
#define X2SEC_TRY(decl, expr) X2SEC_TRY_IMPL(X2SEC_CONCAT(x2sec_try_, __LINE__), decl, expr)
#define X2SEC_TRY_STATUS(expr)                       \
    do {                                             \
        auto x2sec_st = (expr);                      \
        if (!x2sec_st.ok()) return x2sec_st.error(); \
    } while (0)
