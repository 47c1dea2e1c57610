#include <algorithm>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/x509/x509.hpp>

namespace x2sec::x509 {

struct CertificateCache::Impl {
    struct Entry {
        std::string key;  // SHA-256 of the DER
        Bytes der;
        Certificate cert;
    };
    mutable std::mutex mu;
    std::list<Entry> lru;  // most recently used first
    std::unordered_map<std::string, std::list<Entry>::iterator> index;
    uint64_t hits = 0, misses = 0;
};

CertificateCache::CertificateCache(size_t capacity)
    : m_impl(std::make_unique<Impl>()), m_capacity(capacity == 0 ? 1 : capacity) {}

CertificateCache::~CertificateCache() = default;

Result<Certificate> CertificateCache::parse(BytesView der) {
    const Bytes h = crypto::digest(crypto::Hash::Sha256, der);
    std::string key(h.begin(), h.end());
    {
        std::lock_guard<std::mutex> lock(m_impl->mu);
        auto it = m_impl->index.find(key);
        if (it != m_impl->index.end() && it->second->der.size() == der.size() &&
            std::equal(der.begin(), der.end(), it->second->der.begin())) {
            m_impl->lru.splice(m_impl->lru.begin(), m_impl->lru, it->second);
            ++m_impl->hits;
            return it->second->cert;
        }
        ++m_impl->misses;
    }
    // Parsed outside the lock: two threads missing on the same DER both parse it, and the
    // second insert below replaces nothing (the first entry stays).
    auto parsed = Certificate::from_der(der);
    if (!parsed.ok()) return parsed;
    std::lock_guard<std::mutex> lock(m_impl->mu);
    auto it = m_impl->index.find(key);
    if (it != m_impl->index.end()) {
        if (it->second->der.size() == der.size() && std::equal(der.begin(), der.end(), it->second->der.begin()))
            return parsed;              // another thread inserted it meanwhile
        m_impl->lru.erase(it->second);  // same hash, different DER: keep the newest
        m_impl->index.erase(it);
    }
    while (m_impl->lru.size() >= m_capacity) {
        m_impl->index.erase(m_impl->lru.back().key);
        m_impl->lru.pop_back();
    }
    m_impl->lru.push_front(Impl::Entry{key, Bytes(der.begin(), der.end()), *parsed});
    m_impl->index.emplace(std::move(key), m_impl->lru.begin());
    return parsed;
}

size_t CertificateCache::size() const {
    std::lock_guard<std::mutex> lock(m_impl->mu);
    return m_impl->lru.size();
}

uint64_t CertificateCache::hits() const {
    std::lock_guard<std::mutex> lock(m_impl->mu);
    return m_impl->hits;
}

uint64_t CertificateCache::misses() const {
    std::lock_guard<std::mutex> lock(m_impl->mu);
    return m_impl->misses;
}

void CertificateCache::clear() {
    std::lock_guard<std::mutex> lock(m_impl->mu);
    m_impl->index.clear();
    m_impl->lru.clear();
}

CertificateCache& CertificateCache::shared() {
    static CertificateCache cache(1024);
    return cache;
}

}  // namespace x2sec::x509
