// The Child SA table: which IKE SA holds each Child SA (by inbound SPI), and the one place a
// Child SA's state is written.
#pragma once

#include <memory>
#include <unordered_map>
#include <x2sec/common/counters.hpp>
#include <x2sec/common/log.hpp>

#include "ike_sa.hpp"

namespace x2sec::ike {

class ChildSaTable {
public:
    ChildSaTable(Counters& counters, std::shared_ptr<spdlog::logger> log)
        : m_counters(counters), m_log(std::move(log)) {}

    // Appends `child` to sa.children and indexes its inbound SPI under sa.id: the only place a
    // Child SA joins an IKE SA.
    ChildSa& attach(IkeSa& sa, ChildSa child);
    // Removes the Child SA at `it` from sa.children and the index: the only place one leaves.
    ChildSa detach(IkeSa& sa, std::vector<ChildSa>::iterator it);
    // The id of the IKE SA holding the Child SA with this inbound SPI.
    std::optional<uint64_t> owner(uint32_t spi_in) const;
    const std::unordered_map<uint32_t, uint64_t>& index() const { return m_owner; }

    // The one writer of ChildSa::st().  Legal: INSTALLED -> REKEYING | REKEYED | DELETING,
    // REKEYING -> INSTALLED (rekey failed) | REKEYED | DELETING, REKEYED -> INSTALLED (the
    // successor went) | DELETING.  Anything else fails with a named error, counted
    // ike.child.illegal_transition, and leaves the state as it was.
    Status set_state(const IkeSa& sa, ChildSa& c, ChildSa::St to);

private:
    Counters& m_counters;
    std::shared_ptr<spdlog::logger> m_log;
    std::unordered_map<uint32_t, uint64_t> m_owner;
};

}  // namespace x2sec::ike
