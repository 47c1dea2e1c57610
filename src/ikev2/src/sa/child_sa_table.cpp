// The Child SA table (see child_sa_table.hpp).
#include "child_sa_table.hpp"

namespace x2sec::ike {

const char* state_name(ChildSa::St s) {
    switch (s) {
        case ChildSa::St::Installed:
            return "INSTALLED";
        case ChildSa::St::Rekeying:
            return "REKEYING";
        case ChildSa::St::Rekeyed:
            return "REKEYED";
        case ChildSa::St::Deleting:
            return "DELETING";
    }
    return "?";
}

ChildSa& ChildSaTable::attach(IkeSa& sa, ChildSa child) {
    auto [it, fresh] = m_owner.emplace(child.spi_in, sa.id);
    if (!fresh) {
        // Cannot happen (inbound SPIs are unique, moves detach first); check_indexes() reports it.
        m_log->error("Child SA {:08x}: inbound SPI already indexed under IKE SA #{}, attached to #{}", child.spi_in,
                     it->second, sa.id);
        it->second = sa.id;
    }
    sa.children.push_back(std::move(child));
    return sa.children.back();
}

ChildSa ChildSaTable::detach(IkeSa& sa, std::vector<ChildSa>::iterator it) {
    ChildSa c = std::move(*it);
    sa.children.erase(it);
    auto o = m_owner.find(c.spi_in);
    if (o != m_owner.end() && o->second == sa.id)
        m_owner.erase(o);
    else
        m_log->error("Child SA {:08x}: not indexed under IKE SA #{} when detached", c.spi_in, sa.id);
    return c;
}

std::optional<uint64_t> ChildSaTable::owner(uint32_t spi_in) const {
    auto it = m_owner.find(spi_in);
    if (it == m_owner.end()) return std::nullopt;
    return it->second;
}

Status ChildSaTable::set_state(const IkeSa& sa, ChildSa& c, ChildSa::St to) {
    using S = ChildSa::St;
    const S from = c.m_st;
    if (from == to) return {};
    bool legal = false;
    switch (from) {
        case S::Installed:
            legal = to == S::Rekeying || to == S::Rekeyed || to == S::Deleting;
            break;
        case S::Rekeying:
            legal = to == S::Installed || to == S::Rekeyed || to == S::Deleting;
            break;
        case S::Rekeyed:
            legal = to == S::Installed || to == S::Deleting;
            break;
        case S::Deleting:
            legal = false;
            break;
    }
    if (!legal) {
        m_counters.inc("ike.child.illegal_transition");
        std::string what = fmt::format("IKE SA #{}: Child SA {} {:08x}: illegal transition {} -> {}", sa.id, c.name,
                                       c.spi_in, state_name(from), state_name(to));
        m_log->error("{} refused (ike.child.illegal_transition)", what);
        return Error(ErrorDomain::Ike, 0, what);
    }
    m_log->debug("IKE SA #{}: Child SA {} {:08x}: {} -> {}", sa.id, c.name, c.spi_in, state_name(from), state_name(to));
    c.m_st = to;
    return {};
}

}  // namespace x2sec::ike
