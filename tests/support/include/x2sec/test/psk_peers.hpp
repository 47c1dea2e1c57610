// PSK peer configs with given identities, for the responder peer-selection tests (IKE_AUTH
// lands an initiator on the config its IDi names): header only, for tests that link x2sec::ikev2.
//
//   auto i = test::psk_peer(base_peer(true), "fqdn:a1.henb.example", "fqdn:b1.henb.example", "one");
//   auto r = test::psk_peer(base_peer(false), "fqdn:b1.henb.example", std::nullopt, "catch-all");
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>
#include <x2sec/ikev2/engine.hpp>

namespace x2sec::test {

// `base` (addresses, proposals, children) with identity `local`, expecting the peer identity
// `remote` (unset: any peer, ranked below an exact match), authenticated by the PSK `psk`.
inline ike::PeerConfig psk_peer(ike::PeerConfig base, const std::string& local,
                                const std::optional<std::string>& remote, const std::string& psk) {
    base.local_id = ike::Identity::parse(local).value();
    if (remote)
        base.remote_id = ike::Identity::parse(*remote).value();
    else
        base.remote_id.reset();
    base.psk = SecureBytes(as_bytes(psk));
    return base;
}

// An engine configuration holding `peers`.
inline ike::EngineConfig engine_with(std::vector<ike::PeerConfig> peers) {
    ike::EngineConfig c;
    c.peers = std::move(peers);
    return c;
}

}  // namespace x2sec::test
