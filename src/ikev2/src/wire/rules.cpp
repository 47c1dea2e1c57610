// IKEv2 message rules as data (RFC 7296 section 3 and 1.2-1.4) and the one walker that
// enforces them.  Each row: payload type, required / optional / sufficient, maximum count, and
// for Notify rows which notifies it covers; the rows are in the order we write payloads.
#include <algorithm>
#include <stdexcept>
#include <x2sec/ikev2/wire.hpp>

namespace x2sec::ike::wire {

namespace {

using PT = PayloadType;
constexpr Presence Req = Presence::Required;
constexpr Presence Opt = Presence::Optional;
constexpr Presence Suf = Presence::Sufficient;

// Every error notify answers a response in place of its payloads (RFC 7296 2.21).
const PayloadRule kErrorAnswers{PT::Notify, Suf, 32, kErrorNotify};

struct ExchangeRule {
    ExchangeType exchange;
    bool response;
    MessageRule rule;
};

const std::vector<ExchangeRule>& exchange_rules() {
    static const std::vector<ExchangeRule> table = {
        {ExchangeType::IkeSaInit,
         false,
         {"IKE_SA_INIT request",
          {{PT::Notify, Opt, 1, notify::Cookie},
           {PT::SA, Req, 1},
           {PT::KE, Req, 1},
           {PT::Nonce, Req, 1},
           {PT::Notify, Opt, 32},
           {PT::VendorId, Opt, 16}}}},
        // The required payloads of responses are in the purpose rules (an error answer carries
        // notifies only).  CERTREQ after the NAT detection notifies, as strongSwan writes it.
        {ExchangeType::IkeSaInit,
         true,
         {"IKE_SA_INIT response",
          {{PT::Notify, Opt, 1, notify::Cookie},
           {PT::SA, Opt, 1},
           {PT::KE, Opt, 1},
           {PT::Nonce, Opt, 1},
           {PT::Notify, Opt, 8, notify::NatDetectionSourceIp},
           {PT::Notify, Opt, 8, notify::NatDetectionDestinationIp},
           {PT::CERTREQ, Opt, 8},
           {PT::Notify, Opt, 32},
           {PT::VendorId, Opt, 16}}}},
        {ExchangeType::IkeAuth,
         false,
         {"IKE_AUTH request",
          {{PT::IDi, Req, 1},
           {PT::CERT, Opt, 8},
           {PT::CERTREQ, Opt, 8},
           {PT::IDr, Opt, 1},
           {PT::Notify, Opt, 1, notify::InitialContact},
           {PT::AUTH, Req, 1},
           {PT::CP, Opt, 1},
           {PT::SA, Opt, 1},
           {PT::TSi, Opt, 1},
           {PT::TSr, Opt, 1},
           {PT::Notify, Opt, 32},
           {PT::VendorId, Opt, 16}}}},
        {ExchangeType::IkeAuth,
         true,
         {"IKE_AUTH response",
          {{PT::IDr, Opt, 1},
           {PT::CERT, Opt, 8},
           {PT::AUTH, Opt, 1},
           {PT::CP, Opt, 1},
           {PT::SA, Opt, 1},
           {PT::TSi, Opt, 1},
           {PT::TSr, Opt, 1},
           {PT::Notify, Opt, 32},
           {PT::VendorId, Opt, 16}}}},
        {ExchangeType::CreateChildSa,
         false,
         {"CREATE_CHILD_SA request",
          {{PT::Notify, Opt, 1, notify::RekeySa},
           {PT::SA, Req, 1},
           {PT::Nonce, Req, 1},
           {PT::KE, Opt, 1},
           {PT::TSi, Opt, 1},
           {PT::TSr, Opt, 1},
           {PT::Notify, Opt, 32},
           {PT::VendorId, Opt, 16}}}},
        {ExchangeType::CreateChildSa,
         true,
         {"CREATE_CHILD_SA response",
          {{PT::SA, Opt, 1},
           {PT::Nonce, Opt, 1},
           {PT::KE, Opt, 1},
           {PT::TSi, Opt, 1},
           {PT::TSr, Opt, 1},
           {PT::Notify, Opt, 32},
           {PT::VendorId, Opt, 16}}}},
        {ExchangeType::Informational,
         false,
         {"INFORMATIONAL request",
          {{PT::Notify, Opt, 32}, {PT::Delete, Opt, 16}, {PT::VendorId, Opt, 16}, {PT::CP, Opt, 1}}}},
        {ExchangeType::Informational,
         true,
         {"INFORMATIONAL response",
          {{PT::Notify, Opt, 32}, {PT::Delete, Opt, 16}, {PT::VendorId, Opt, 16}, {PT::CP, Opt, 1}}}},
    };
    return table;
}

struct PurposeRule {
    ResponsePurpose purpose;
    MessageRule rule;
};

const std::vector<PurposeRule>& purpose_rules() {
    static const std::vector<PurposeRule> table = {
        {ResponsePurpose::IkeSaInit,
         {"IKE_SA_INIT response",
          {{PT::Notify, Suf, 1, notify::Cookie},
           {PT::SA, Req, 1},
           {PT::KE, Req, 1},
           {PT::Nonce, Req, 1},
           kErrorAnswers},
          false}},
        {ResponsePurpose::IkeAuth,
         {"IKE_AUTH response", {{PT::IDr, Req, 1}, {PT::AUTH, Req, 1}, kErrorAnswers}, false}},
        {ResponsePurpose::AuthChild,
         {"IKE_AUTH response (Child SA)",
          {{PT::SA, Req, 1}, {PT::TSi, Req, 1}, {PT::TSr, Req, 1}, kErrorAnswers},
          false}},
        {ResponsePurpose::CreateChild,
         {"CREATE_CHILD_SA response (Child SA)",
          {{PT::SA, Req, 1},
           {PT::Nonce, Req, 1},
           {PT::KE, Opt, 1},
           {PT::TSi, Req, 1},
           {PT::TSr, Req, 1},
           kErrorAnswers},
          false}},
        {ResponsePurpose::RekeyIke,
         {"CREATE_CHILD_SA response (IKE SA rekey)",
          {{PT::SA, Req, 1}, {PT::Nonce, Req, 1}, {PT::KE, Req, 1}, kErrorAnswers},
          false}},
        {ResponsePurpose::CreateChildRequest,
         {"CREATE_CHILD_SA request",
          {{PT::SA, Req, 1}, {PT::Nonce, Req, 1}, {PT::KE, Opt, 1}, {PT::TSi, Req, 1}, {PT::TSr, Req, 1}},
          false}},
    };
    return table;
}

bool covers(const PayloadRule& r, const Payload& p, bool specific) {
    if (r.type != p.type) return false;
    if (p.type != PT::Notify) return true;
    const auto* n = p.as<NotifyPayload>();
    if (!n) return false;
    if (specific) return r.notify == n->type;
    if (r.notify == kErrorNotify) return notify::is_error(n->type);
    return r.notify == kAnyNotify;
}

// The most specific row covering p: a Notify row for its type, then one for every error type,
// then one for every notify; -1 if none.
int row_of(const MessageRule& rule, const Payload& p) {
    for (int pass = 0; pass < 3; ++pass)
        for (size_t i = 0; i < rule.payloads.size(); ++i) {
            const auto& r = rule.payloads[i];
            bool hit = pass == 0   ? covers(r, p, true)
                       : pass == 1 ? r.notify == kErrorNotify && covers(r, p, false)
                                   : r.notify == kAnyNotify && covers(r, p, false);
            if (hit) return static_cast<int>(i);
        }
    return -1;
}

std::string row_name(const PayloadRule& r) {
    if (r.type != PT::Notify || r.notify == kAnyNotify) return to_string(r.type);
    if (r.notify == kErrorNotify) return "error Notify";
    return std::string("Notify ") + notify::name(static_cast<uint16_t>(r.notify));
}

}  // namespace

const char* to_string(Presence p) {
    switch (p) {
        case Presence::Required:
            return "required";
        case Presence::Optional:
            return "optional";
        case Presence::Sufficient:
            return "sufficient";
    }
    return "?";
}

const MessageRule* find_rule(ExchangeType exchange, bool response) {
    for (const auto& r : exchange_rules())
        if (r.exchange == exchange && r.response == response) return &r.rule;
    return nullptr;
}

const MessageRule& purpose_rule(ResponsePurpose p) {
    for (const auto& r : purpose_rules())
        if (r.purpose == p) return r.rule;
    return purpose_rules().front().rule;  // every enumerator has a row (test_wire checks)
}

const char* to_string(ResponsePurpose p) {
    return purpose_rule(p).name.data();
}

Result<Checked> check_rules(const MessageRule& rule, const std::vector<Payload>& payloads) {
    std::vector<unsigned> counts(rule.payloads.size(), 0);
    Checked c(rule, payloads);
    for (const auto& p : payloads) {
        if (p.as<UnknownPayload>()) continue;
        if (p.type == PT::SK || p.type == PT::SKF)
            return syntax_error(std::string(to_string(p.type)) + " payload inside an encrypted message");
        int row = row_of(rule, p);
        if (row < 0) {
            if (!rule.closed) continue;
            return syntax_error(std::string(to_string(p.type)) + " payload not allowed in " + std::string(rule.name));
        }
        const auto& r = rule.payloads[static_cast<size_t>(row)];
        if (++counts[static_cast<size_t>(row)] > r.max)
            return syntax_error(std::string(rule.name) + " has more than " + std::to_string(r.max) + " " + row_name(r) +
                                " payloads");
        if (r.presence == Presence::Sufficient && !c.m_answer) c.m_answer = &p;
    }
    for (size_t i = 0; i < rule.payloads.size(); ++i) {
        const auto& r = rule.payloads[i];
        if (r.presence != Presence::Required || counts[i] > 0) continue;
        c.m_complete = false;
        if (!c.m_answer) return syntax_error(std::string(rule.name) + ": no " + row_name(r) + " payload");
    }
    return c;
}

void order_payloads(const MessageRule& rule, std::vector<Payload>& payloads) {
    auto rank = [&](const Payload& p) {
        int r = row_of(rule, p);
        return r < 0 ? static_cast<int>(rule.payloads.size()) : r;
    };
    std::stable_sort(payloads.begin(), payloads.end(),
                     [&](const Payload& a, const Payload& b) { return rank(a) < rank(b); });
}

bool Checked::required(PayloadType t) const {
    return std::any_of(m_rule->payloads.begin(), m_rule->payloads.end(),
                       [&](const PayloadRule& r) { return r.type == t && r.presence == Presence::Required; });
}

void Checked::missing(PayloadType t) const {
    throw std::logic_error(std::string(m_rule->name) + ": " + to_string(t) +
                           " read as guaranteed, but the rule does not require it");
}

const NotifyPayload* Checked::notify(uint16_t type) const {
    return find_notify(*m_payloads, type);
}

const NotifyPayload* Checked::error() const {
    for (const auto& p : *m_payloads)
        if (auto* n = p.as<NotifyPayload>(); n && notify::is_error(n->type)) return n;
    return nullptr;
}

const char* body_name(const Payload& p) {
    return std::visit(
        [](const auto& b) -> const char* {
            using T = std::decay_t<decltype(b)>;
            if constexpr (std::is_same_v<T, UnknownPayload>)
                return "unknown";
            else if constexpr (std::is_same_v<T, SaPayload>)
                return to_string(PayloadType::SA);
            else if constexpr (std::is_same_v<T, KePayload>)
                return to_string(PayloadType::KE);
            else if constexpr (std::is_same_v<T, NoncePayload>)
                return to_string(PayloadType::Nonce);
            else if constexpr (std::is_same_v<T, TsPayload>)
                return "TS";
            else if constexpr (std::is_same_v<T, IdPayload>)
                return "ID";
            else if constexpr (std::is_same_v<T, NotifyPayload>)
                return to_string(PayloadType::Notify);
            else if constexpr (std::is_same_v<T, DeletePayload>)
                return to_string(PayloadType::Delete);
            else if constexpr (std::is_same_v<T, AuthPayload>)
                return to_string(PayloadType::AUTH);
            else
                return "other";
        },
        p.body);
}

}  // namespace x2sec::ike::wire
