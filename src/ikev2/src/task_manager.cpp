// The task manager: message IDs (window 1), the exchange in flight and its retransmission state,
// the response cache, fragmentation (protect) and reassembly, dispatch of received datagrams to
// the IKE_SA_INIT handlers, to the responder tasks (requests) and the initiator tasks (responses).
#include <algorithm>

#include "engine_internal.hpp"
#include "sa/timer_jitter.hpp"

namespace x2sec::ike {

using namespace wire;

// ---------------------------------------------------------------- sending

void EngineImpl::send_packets(IkeSa& sa, const std::vector<Bytes>& packets) {
    for (const auto& p : packets) {
        Datagram d;
        d.local = sa.local;
        d.remote = sa.remote;
        d.data = p;
        d.non_esp_marker = sa.natt_port;
        m_out.push_back(std::move(d));
    }
}

Result<std::vector<Bytes>> EngineImpl::protect(IkeSa& sa, Header h, std::vector<Payload> payloads) {
    if (!sa.cipher_out) return Error(ErrorDomain::Ike, 0, "no keys to protect the message");
    // Written in the order of the exchange's rule (the tasks of an exchange append theirs).
    if (const MessageRule* rule = find_rule(h.exchange, (h.flags & kFlagResponse) != 0))
        order_payloads(*rule, payloads);
    Writer inner;
    uint8_t first = encode_chain(inner, payloads);
    const Bytes& pt = inner.data();
    auto& c = *sa.cipher_out;
    const auto& pc = peer(sa);
    size_t limit = pc.fragment_size;
    size_t overhead = (sa.remote.addr.v6 ? 40 : 20) + 8 + (sa.natt_port ? 4 : 0);
    limit = limit > overhead ? limit - overhead : 0;
    std::vector<Bytes> out;
    size_t whole = kHeaderSize + kGenericHeaderSize + c.sealed_size(pt.size());
    bool fragment = pc.fragmentation && sa.peer_frag && whole > limit && h.exchange != ExchangeType::IkeSaInit;
    if (!fragment) {
        Writer w;
        h.next_payload = static_cast<uint8_t>(PayloadType::SK);
        h.length = static_cast<uint32_t>(whole);
        h.encode(w);
        w.u8(first);
        w.u8(0);
        w.u16(static_cast<uint16_t>(kGenericHeaderSize + c.sealed_size(pt.size())));
        X2SEC_TRY(auto sealed, c.seal(w.data(), pt, m_rng));
        w.bytes(sealed);
        out.push_back(w.take());
        return out;
    }
    size_t avail = limit > kHeaderSize + 8 ? limit - kHeaderSize - 8 : 0;
    size_t chunk = avail;
    while (chunk > 0 && c.sealed_size(chunk) > avail) --chunk;
    if (chunk == 0) return Error(ErrorDomain::Ike, 0, "fragment size too small");
    size_t total = (pt.size() + chunk - 1) / chunk;
    if (total > 0xffff || total > m_config.max_fragments)
        return Error(ErrorDomain::Ike, 0, "message needs " + std::to_string(total) + " fragments");
    for (size_t i = 0; i < total; ++i) {
        size_t off = i * chunk, len = std::min(chunk, pt.size() - off);
        BytesView part(pt.data() + off, len);
        Writer w;
        h.next_payload = static_cast<uint8_t>(PayloadType::SKF);
        h.length = static_cast<uint32_t>(kHeaderSize + 8 + c.sealed_size(len));
        h.encode(w);
        w.u8(i == 0 ? first : 0);
        w.u8(0);
        w.u16(static_cast<uint16_t>(8 + c.sealed_size(len)));
        w.u16(static_cast<uint16_t>(i + 1));
        w.u16(static_cast<uint16_t>(total));
        X2SEC_TRY(auto sealed, c.seal(w.data(), part, m_rng));
        w.bytes(sealed);
        out.push_back(w.take());
    }
    m_counters.inc("ike.tx.fragments", out.size());
    return out;
}

void EngineImpl::send_response(IkeSa& sa, ExchangeType type, uint32_t mid, const std::vector<Payload>& payloads) {
    Header h;
    h.spi_i = sa.spi_i;
    h.spi_r = sa.spi_r;
    h.exchange = type;
    h.flags = static_cast<uint8_t>(kFlagResponse | (sa.initiator ? kFlagInitiator : 0));
    h.message_id = mid;
    auto packets = protect(sa, h, payloads);
    if (!packets.ok()) {
        m_log->error("IKE SA #{}: cannot protect {} response: {}", sa.id, to_string(type), packets.error().to_string());
        return;
    }
    sa.cached = CachedResponse{mid, *packets};
    send_packets(sa, *packets);
}

void EngineImpl::send_error_response(IkeSa& sa, ExchangeType type, uint32_t mid, uint16_t notify_type, Bytes data) {
    std::vector<Payload> pl;
    pl.push_back({PayloadType::Notify, false, NotifyPayload{ProtocolId::None, {}, notify_type, std::move(data)}});
    send_response(sa, type, mid, pl);
}

bool EngineImpl::allow_unprotected_answer(Millis now) {
    if (m_config.max_unprotected_notifies_per_s == 0) {
        count("unprotected_notify_disabled");
        return false;
    }
    if (m_unprot_window_start < 0 || now - m_unprot_window_start >= 1000) {
        m_unprot_window_start = now;
        m_unprot_in_window = 0;
    }
    if (m_unprot_in_window >= m_config.max_unprotected_notifies_per_s) {
        count("unprotected_notify_rate_limited");
        return false;
    }
    ++m_unprot_in_window;
    return true;
}

void EngineImpl::send_unprotected_notify(const Datagram& d, const Header& req, uint16_t notify_type, Bytes data) {
    Message m;
    m.header = req;
    m.header.version = 0x20;  // we speak IKEv2.0 (RFC 7296 2.5; also the answer to a higher major version)
    m.header.flags = static_cast<uint8_t>(kFlagResponse | (req.initiator() ? 0 : kFlagInitiator));
    m.header.exchange = req.exchange;
    m.payloads.push_back(
        {PayloadType::Notify, false, NotifyPayload{ProtocolId::None, {}, notify_type, std::move(data)}});
    Datagram out;
    out.local = d.local;
    out.remote = d.remote;
    out.non_esp_marker = d.non_esp_marker;
    out.data = m.encode();
    m_out.push_back(std::move(out));
}

// ---------------------------------------------------------------- task manager

void EngineImpl::queue_exchange(IkeSa& sa, Exchange ex, Millis now) {
    sa.queue.push_back(std::move(ex));
    start_next(sa, now);
}

void EngineImpl::start_next(IkeSa& sa, Millis now) {
    touch(sa);
    while (!sa.outstanding && !sa.queue.empty() && sa.state != SaState::Destroyed) {
        Exchange ex = std::move(sa.queue.front());
        sa.queue.pop_front();
        // An encrypted exchange needs keys; a rekeyed or deleting SA runs only deletes.
        std::vector<Payload> payloads;
        bool failed = false;
        for (auto& t : ex.tasks) {
            auto st = t->build_i(*this, sa, payloads, now);
            if (!st.ok()) {
                m_log->warn("IKE SA #{}: task {} not started: {}", sa.id, t->name(), st.error().to_string());
                failed = true;
                break;
            }
        }
        if (failed) {
            for (auto& t : ex.tasks) t->abort(*this, sa, now);
            continue;
        }
        if (sa.state == SaState::Destroyed) return;
        Header h;
        h.spi_i = sa.spi_i;
        h.spi_r = sa.spi_r;
        h.exchange = ex.type;
        h.flags = sa.initiator ? kFlagInitiator : 0;
        h.message_id = sa.my_mid;
        Outstanding o;
        o.mid = sa.my_mid;
        if (ex.type == ExchangeType::IkeSaInit) {
            Message m;
            m.header = h;
            m.payloads = std::move(payloads);
            order_payloads(*find_rule(ExchangeType::IkeSaInit, false), m.payloads);
            o.packets.push_back(m.encode());
            sa.init_req = o.packets.front();
            o.unprotected = true;
        } else {
            auto packets = protect(sa, h, std::move(payloads));
            if (!packets.ok()) {
                m_log->error("IKE SA #{}: cannot protect {} request: {}", sa.id, to_string(ex.type),
                             packets.error().to_string());
                for (auto& t : ex.tasks) t->abort(*this, sa, now);
                continue;
            }
            o.packets = std::move(packets).value();
        }
        o.exchange = std::move(ex);
        o.next_retransmit = now + jittered(m_config.retransmit.timeout_ms, m_config.retransmit.jitter_percent, m_rng);
        m_log->debug("IKE SA #{}: sending {} request #{}", sa.id, to_string(o.exchange.type), o.mid);
        send_packets(sa, o.packets);
        sa.outstanding = std::move(o);
    }
}

bool EngineImpl::abandon_exchanges(IkeSa& sa, Millis now) {
    bool had = sa.outstanding.has_value();
    if (sa.outstanding) {
        for (auto& t : sa.outstanding->exchange.tasks) t->abort(*this, sa, now);
        sa.outstanding.reset();
    }
    for (auto& ex : sa.queue)
        for (auto& t : ex.tasks) t->abort(*this, sa, now);
    sa.queue.clear();
    return had;
}

void EngineImpl::fail_outstanding(IkeSa& sa, Millis now, const std::string& why) {
    if (!sa.outstanding) return;
    for (auto& t : sa.outstanding->exchange.tasks) t->abort(*this, sa, now);
    sa.outstanding.reset();
    m_log->warn("IKE SA #{}: exchange failed: {}", sa.id, why);
}

// ---------------------------------------------------------------- receiving

void EngineImpl::handle_datagram(const Datagram& d, Millis now) {
    if (d.data.size() > m_config.max_message_size) {
        drop(
            d, "oversized",
            std::to_string(d.data.size()) + " octets exceed the limit of " + std::to_string(m_config.max_message_size));
        return;
    }
    auto decoded = Message::decode(d.data);
    if (!decoded.ok()) {
        const auto& e = decoded.error();
        // Before the header is known we cannot answer safely; count and drop.  Unsupported
        // critical payloads in an IKE_SA_INIT request are answered below.
        auto hdr = Header::decode(d.data);
        if (hdr.ok() && e.code() == notify::UnsupportedCriticalPayload && hdr->exchange == ExchangeType::IkeSaInit &&
            !hdr->response() && hdr->spi_r == 0) {
            auto t = critical_payload_type(e);
            drop(d, "unsupported_critical_payload", e.detail());
            send_unprotected_notify(d, *hdr, notify::UnsupportedCriticalPayload, t ? Bytes{*t} : Bytes{});
            return;
        }
        if (e.code() == notify::InvalidMajorVersion) {
            drop(d, "invalid_major_version", e.detail());
            // RFC 7296 2.5: a request of a higher major version is answered (rate limited) with an
            // unauthenticated INVALID_MAJOR_VERSION carrying our version in the header.
            if (d.data.size() >= kHeaderSize && (d.data[17] >> 4) > 2 && !(d.data[19] & kFlagResponse)) {
                Bytes patched(d.data.begin(), d.data.end());
                patched[17] = 0x20;
                auto h = Header::decode(patched);
                if (h.ok() && allow_unprotected_answer(now))
                    send_unprotected_notify(d, *h, notify::InvalidMajorVersion, {});
            }
            return;
        }
        if (e.code() == notify::UnsupportedCriticalPayload)
            drop(d, "unsupported_critical_payload", e.detail());
        else
            drop(d, "invalid_syntax", e.detail());
        return;
    }
    auto& m = *decoded;
    uint8_t ex = static_cast<uint8_t>(m.header.exchange);
    if (ex < 34 || ex > 37) {
        drop(d, "unknown_exchange", "exchange type " + std::to_string(ex));
        return;
    }
    if (m.header.exchange == ExchangeType::IkeSaInit) {
        if (!m.header.response())
            handle_init_request(d, m, now);
        else
            handle_init_response(d, m, now);
        return;
    }
    handle_protected(d, m, now);
}

namespace {

struct Inbound {
    std::vector<Payload> payloads;
    bool complete = false;
};

}  // namespace

void EngineImpl::handle_protected(const Datagram& d, Message& m, Millis now) {
    const Header& h = m.header;
    uint64_t my_spi = h.initiator() ? h.spi_r : h.spi_i;
    IkeSa* sa = find_by_spi(my_spi);
    if (!sa || (h.initiator() ? sa->spi_i != h.spi_i : sa->spi_r != h.spi_r) || h.initiator() == sa->initiator ||
        !sa->cipher_in) {
        drop(d, "invalid_ike_spi", fmt::format("no IKE SA for SPIs {:016x}/{:016x}", h.spi_i, h.spi_r));
        if (!h.response() && !(sa && h.initiator() == sa->initiator) && allow_unprotected_answer(now))
            send_unprotected_notify(d, h, notify::InvalidIkeSpi, {});
        return;
    }
    if (m.payloads.empty() ||
        (m.payloads.back().type != PayloadType::SK && m.payloads.back().type != PayloadType::SKF) ||
        m.payloads.size() != 1) {
        drop(d, "invalid_syntax", std::string(to_string(h.exchange)) + " without a lone SK payload");
        return;
    }
    // Message ID window (RFC 7296 2.3, window size 1).
    bool response = h.response();
    if (!response) {
        if (h.message_id + 1 == sa->peer_mid && sa->cached && sa->cached->mid == h.message_id) {
            auto* skf = m.payloads.back().as<SkfPayload>();
            if (!skf || skf->number == 1) {
                count("retransmit");
                m_log->info("IKE SA #{}: retransmitted {} request #{} from {}, resending response", sa->id,
                            to_string(h.exchange), h.message_id, d.remote.to_string());
                send_packets(*sa, sa->cached->packets);
            }
            return;
        }
        if (h.message_id != sa->peer_mid) {
            out_of_window_request(*sa, d, m, now);
            return;
        }
    } else if (!sa->outstanding || sa->outstanding->mid != h.message_id ||
               sa->outstanding->exchange.type != h.exchange) {
        drop(d, "invalid_message_id", "unexpected response #" + std::to_string(h.message_id));
        return;
    }
    // Decrypt (one SK, or reassemble SKF fragments).
    size_t aad_len = kHeaderSize + (m.payloads.back().type == PayloadType::SKF ? 8 : kGenericHeaderSize);
    BytesView aad(d.data.data(), aad_len);
    std::vector<Payload> inner;
    // Decodes the decrypted inner payload chain; on failure drops the message, counts it and
    // answers a request with INVALID_SYNTAX or UNSUPPORTED_CRITICAL_PAYLOAD.
    auto decode_inner = [&](BytesView plain, uint8_t first_next) -> bool {
        auto chain = decode_chain(plain, first_next);
        if (!chain.ok()) {
            auto& e = chain.error();
            bool critical = e.code() == notify::UnsupportedCriticalPayload;
            drop(d, critical ? "unsupported_critical_payload" : "invalid_syntax", e.detail());
            if (!response) {
                sa->peer_mid++;
                auto t = critical_payload_type(e);
                send_error_response(*sa, h.exchange, h.message_id,
                                    critical ? notify::UnsupportedCriticalPayload : notify::InvalidSyntax,
                                    critical && t ? Bytes{*t} : Bytes{});
            }
            return false;
        }
        inner = std::move(chain).value();
        return true;
    };
    if (auto* sk = m.payloads.back().as<SkPayload>()) {
        auto pt = sa->cipher_in->open(aad, sk->data);
        if (!pt.ok()) {
            drop(d, "integrity_check_failed", pt.error().detail());
            return;
        }
        if (!decode_inner(*pt, sk->inner_next)) return;
    } else {
        auto* skf = m.payloads.back().as<SkfPayload>();
        if (!skf) {  // the lone payload is SK or SKF (checked above); never dereferenced unchecked
            drop(d, "invalid_syntax", std::string(to_string(h.exchange)) + " without a lone SK or SKF payload");
            return;
        }
        auto pt = sa->cipher_in->open(aad, skf->data);
        if (!pt.ok()) {
            drop(d, "integrity_check_failed", "fragment " + std::to_string(skf->number) + ": " + pt.error().detail());
            return;
        }
        Reassembly& r = response ? sa->frag_resp : sa->frag_req;
        if (!r.active || r.mid != h.message_id) {
            r.reset();
            r.active = true;
            r.mid = h.message_id;
            r.total = skf->total;
        }
        if (skf->total != r.total) {
            if (skf->total < r.total) {
                drop(d, "fragment_mismatch",
                     "fragment total " + std::to_string(skf->total) + " < " + std::to_string(r.total));
                return;
            }
            r.reset();
            r.active = true;
            r.mid = h.message_id;
            r.total = skf->total;
        }
        if (r.total > m_config.max_fragments) {
            drop(d, "fragment_limit", std::to_string(r.total) + " fragments announced");
            r.reset();
            return;
        }
        if (!r.parts.count(skf->number)) {
            r.bytes += pt->size();
            if (skf->number == 1) r.first_next = skf->inner_next;
            r.parts.emplace(skf->number, std::move(pt).value());
        }
        if (r.bytes > m_config.max_message_size) {
            drop(d, "fragment_limit", "reassembled message exceeds " + std::to_string(m_config.max_message_size));
            r.reset();
            return;
        }
        if (r.parts.size() < r.total) return;  // wait for more
        Bytes whole;
        for (auto& [n, part] : r.parts) whole.insert(whole.end(), part.begin(), part.end());
        uint8_t first = r.first_next;
        r.reset();
        m_counters.inc("ike.rx.reassembled");
        if (!decode_inner(whole, first)) return;
    }
    // Authenticated: track liveness and NAT mapping changes.
    sa->last_rx = now;
    bool floated = d.non_esp_marker && !sa->natt_port;
    if (floated) sa->natt_port = true;
    if ((floated || sa->nat_local || sa->nat_remote || sa->encap) && (d.remote != sa->remote || d.local != sa->local)) {
        m_log->info("IKE SA #{}: peer moved {} -> {}", sa->id, sa->remote.to_string(), d.remote.to_string());
        sa->remote = d.remote;
        sa->local = d.local;
    }
    const MessageRule* rule = find_rule(h.exchange, response);
    auto st = rule ? check_rules(*rule, inner) : Result<Checked>(syntax_error("no rule"));
    if (!st.ok()) {
        drop(d, "invalid_syntax", st.error().detail());
        if (!response) {
            sa->peer_mid++;
            send_error_response(*sa, h.exchange, h.message_id, notify::InvalidSyntax);
            if (h.exchange == ExchangeType::IkeAuth) destroy(*sa, now, true, "invalid IKE_AUTH request");
        } else {
            fail_outstanding(*sa, now, st.error().detail());
            if (h.exchange == ExchangeType::IkeAuth) destroy(*sa, now, true, "invalid IKE_AUTH response");
        }
        return;
    }
    if (!response)
        process_request(*sa, d, h, *st, now);
    else
        process_response(*sa, h, *st, now);
}

// RFC 7296 2.3 and 3.10.1: a request outside the window is never processed nor acknowledged.
// Sending INVALID_MESSAGE_ID is optional and must be rate limited; it goes in a new
// INFORMATIONAL request of ours.  To give no amplification to spoofed or replayed traffic it is
// sent only when the IKE SA is established, the Message ID is ahead of the window (a peer whose
// counter ran ahead; a lower one is a stale duplicate whose response the peer already had), the
// request passes the integrity check, no such notify is pending and none was sent on this SA
// within EngineConfig::invalid_mid_notify_interval_ms.  Everything else is dropped silently.
// Each case is counted (ike.rx.invalid_message_id, plus ike.tx.invalid_message_id when
// answered, ike.tx.invalid_message_id_suppressed when rate limited,
// ike.rx.invalid_message_id_unauthenticated when the ICV failed) and logged with the peer.
void EngineImpl::out_of_window_request(IkeSa& sa, const Datagram& d, const Message& m, Millis now) {
    const Header& h = m.header;
    count("invalid_message_id");
    std::string what = fmt::format("{} request #{} outside the window (expected #{}) on IKE SA #{}",
                                   to_string(h.exchange), h.message_id, sa.peer_mid, sa.id);
    std::string silent;
    bool established = sa.state == SaState::Established || sa.state == SaState::Rekeying;
    if (!established)
        silent = "IKE SA not established";
    else if (h.message_id < sa.peer_mid)
        silent = "behind the window (stale duplicate)";
    else if (m_config.invalid_mid_notify_interval_ms <= 0)
        silent = "INVALID_MESSAGE_ID notifies disabled";
    else if (sa.invalid_mid_pending)
        silent = "an INVALID_MESSAGE_ID notify is already pending";
    else if (sa.invalid_mid_notified_at &&
             now - *sa.invalid_mid_notified_at < m_config.invalid_mid_notify_interval_ms) {
        silent = "INVALID_MESSAGE_ID rate limit";
        m_counters.inc("ike.tx.invalid_message_id_suppressed");
    } else if (m.payloads.size() != 1 ||
               (m.payloads.back().type != PayloadType::SK && m.payloads.back().type != PayloadType::SKF)) {
        silent = "no lone SK payload";
    } else {
        const Payload& p = m.payloads.back();
        bool frag = p.type == PayloadType::SKF;
        size_t aad_len = kHeaderSize + (frag ? 8 : kGenericHeaderSize);
        const SkfPayload* skf = p.as<SkfPayload>();
        const SkPayload* sk = p.as<SkPayload>();
        const Bytes* sealed = skf ? &skf->data : sk ? &sk->data : nullptr;
        auto pt = sealed ? sa.cipher_in->open(BytesView(d.data.data(), aad_len), *sealed)
                         : Result<Bytes>(syntax_error("no SK or SKF body"));
        if (!pt.ok()) {
            count("invalid_message_id_unauthenticated");
            silent = "integrity check failed (" + pt.error().detail() + ")";
        }
    }
    if (!silent.empty()) {
        m_log->warn("dropped message from {}: {}; not answered: {} (invalid_message_id)", d.remote.to_string(), what,
                    silent);
        return;
    }
    m_log->warn("message from {}: {}; answering INVALID_MESSAGE_ID in an INFORMATIONAL request (invalid_message_id)",
                d.remote.to_string(), what);
    m_counters.inc("ike.tx.invalid_message_id");
    sa.invalid_mid_notified_at = now;
    sa.invalid_mid_pending = true;
    queue_exchange(sa, make_invalid_mid_exchange(h.message_id), now);
}

void EngineImpl::release_setup_state(IkeSa& sa) {
    // What only IKE_SA_INIT and IKE_AUTH needed (a SeGW holds tens of thousands of SAs; docs/
    // bench-ike.md "Heap per IKE SA"): our DH key pair (the keys are derived), the nonces and
    // the IKE_SA_INIT messages (AUTH is done; IKE SA rekeys bring their own), the candidate
    // peer configs (IKE_AUTH chose one).  The IKE_AUTH response stays cached for retransmits.
    sa.dh.reset();
    Bytes().swap(sa.ni);
    Bytes().swap(sa.nr);
    Bytes().swap(sa.init_req);
    Bytes().swap(sa.init_resp);
    Bytes().swap(sa.cookie);
}

void EngineImpl::process_request(IkeSa& sa, const Datagram&, const Header& h, const Checked& in, Millis now) {
    sa.peer_mid++;
    const Request req{h.exchange, h.message_id, in};
    switch (h.exchange) {
        case ExchangeType::IkeAuth:
            if (sa.initiator || sa.state != SaState::Connecting) {
                m_log->warn("IKE SA #{}: unexpected IKE_AUTH request", sa.id);
                send_error_response(sa, h.exchange, h.message_id, notify::InvalidSyntax);
                return;
            }
            respond(sa, req, make_ike_auth_responder(), now);
            if (sa.state == SaState::Established) release_setup_state(sa);
            return;
        case ExchangeType::CreateChildSa:
            if (!sa.up()) {
                send_error_response(sa, h.exchange, h.message_id, notify::InvalidSyntax);
                return;
            }
            // A rekeyed or deleting IKE SA creates nothing, neither a Child SA nor an IKE SA.
            if (sa.state == SaState::Rekeyed || sa.state == SaState::Deleting) {
                (void)answer_error(sa, req, notify::TemporaryFailure);
                return;
            }
            respond(sa, req, make_create_child_responder(in), now);
            return;
        case ExchangeType::Informational:
            // Counted so a peer's liveness checks (RFC 7296 2.4: an empty INFORMATIONAL request)
            // are visible in the counters and the log (the dpd task's responder role).
            count("informational_request");
            respond(sa, req, make_informational_responder(), now);
            return;
        default:
            return;
    }
}

void EngineImpl::respond(IkeSa& sa, const Request& req, Exchange ex, Millis now) {
    for (auto& t : ex.tasks)
        if (!t->process_r(*this, sa, req, now).ok()) return;  // answered (or nothing to send)
    std::vector<Payload> out;
    for (auto& t : ex.tasks)
        if (!t->build_r(*this, sa, req, out, now).ok()) return;
    send_response(sa, req.type, req.mid, out);
    for (auto& t : ex.tasks) t->responded(*this, sa, now);
}

Error EngineImpl::answer_error(IkeSa& sa, const Request& req, uint16_t notify_type, Bytes data) {
    m_log->info("IKE SA #{}: {} refused: {}", sa.id, to_string(req.type), notify::name(notify_type));
    send_error_response(sa, req.type, req.mid, notify_type, std::move(data));
    return Error(ErrorDomain::Ike, notify_type, std::string("answered ") + notify::name(notify_type));
}

Error EngineImpl::answer_invalid(IkeSa& sa, const Request& req, const Error& why, const char* counter) {
    count(std::string("invalid_syntax.") + counter);
    m_log->error("IKE SA #{} ({}): {} (ike.rx.invalid_syntax.{})", sa.id, peer(sa).name, why.detail(), counter);
    return answer_error(sa, req, notify::InvalidSyntax);
}

namespace {
const char* purpose_counter(ResponsePurpose p) {
    switch (p) {
        case ResponsePurpose::IkeSaInit:
            return "ike_sa_init_response";
        case ResponsePurpose::IkeAuth:
            return "ike_auth_response";
        case ResponsePurpose::AuthChild:
            return "ike_auth_child_response";
        case ResponsePurpose::CreateChild:
            return "create_child_response";
        case ResponsePurpose::RekeyIke:
            return "rekey_ike_response";
        case ResponsePurpose::CreateChildRequest:
            return "create_child_request";
    }
    return "response";
}
}  // namespace

void EngineImpl::refuse_response(IkeSa& sa, Task& t, ResponsePurpose purpose, const Error& why, Millis now) {
    const char* kind = why.code() == notify::TsUnacceptable     ? "ts_unacceptable"
                       : why.code() == notify::NoProposalChosen ? "no_proposal_chosen"
                                                                : "invalid_syntax";
    std::string counter = std::string("ike.rx.") + kind + "." + purpose_counter(purpose);
    m_counters.inc(counter);
    m_log->error("IKE SA #{} ({}): {} from {} refused, {}: {}; giving up the exchange ({})", sa.id, peer(sa).name,
                 to_string(purpose), sa.remote.to_string(), notify::name(static_cast<uint16_t>(why.code())),
                 why.detail(), counter);
    t.refuse(*this, sa, why, now);
}

void EngineImpl::process_response(IkeSa& sa, const Header&, const Checked& in, Millis now) {
    Outstanding o = std::move(*sa.outstanding);
    sa.outstanding.reset();
    sa.my_mid++;
    uint64_t id = sa.id;
    size_t done = 0;  // tasks that ran (processed, refused or failed)
    for (; done < o.exchange.tasks.size(); ++done) {
        auto& t = o.exchange.tasks[done];
        IkeSa* cur = find_sa(id);
        if (!cur || cur->state == SaState::Destroyed) break;
        // What the task reads (its purpose's rule: required payloads, or an error answer) is
        // checked here, once, before the task reads any.
        std::optional<Result<Checked>> own;
        if (auto purpose = t->purpose()) {
            own = check_rules(purpose_rule(*purpose), in.all());
            if (!own->ok()) {
                refuse_response(*cur, *t, *purpose, own->error(), now);
                continue;
            }
        }
        auto st = t->process_i(*this, *cur, own ? **own : in, now);
        if (!st.ok() && !(st.error().domain() == ErrorDomain::Ike && st.error().code() == -1))  // -1: SA gone
            m_log->warn("IKE SA #{}: task {} failed: {}", id, t->name(), st.error().to_string());
    }
    // The SA went with a task (an IKE_AUTH refused, a response that ended it): the tasks after it
    // never ran; they give back what they hold (a Child SPI reserved for the IKE_AUTH Child SA).
    // destroy() could not reach them: the exchange had already left sa.outstanding.
    if (IkeSa* cur = find_sa(id))
        for (size_t j = done; j < o.exchange.tasks.size(); ++j) o.exchange.tasks[j]->abort(*this, *cur, now);
    if (IkeSa* cur = find_sa(id)) start_next(*cur, now);
}

}  // namespace x2sec::ike
