// The IKE daemon's control socket: a unix stream socket; each connection carries one request
// and one response, each a 4-octet big-endian length followed by that many octets of JSON.
//
//   {"cmd":"list-sas"}                                  -> {"ok":true,"sas":[...]}
//   {"cmd":"initiate","peer":"henb-b"}                  -> {"ok":true}
//   {"cmd":"terminate","peer":"henb-b"}                 (or "ike_sa_id":N; "child":"x2" deletes
//                                                        only that Child SA)
//   {"cmd":"rekey","peer":"henb-b"}                     (IKE SA; "child":"x2" rekeys the Child SA)
//   {"cmd":"events","since":0}                          -> {"ok":true,"events":[...],"next":N}
//   {"cmd":"counters"}                                  -> {"ok":true,"counters":{...}}
//   {"cmd":"stop"}                                      delete all SAs, then exit
// Errors: {"ok":false,"error":"what went wrong"}.  No request can end the daemon: a request
// that fails unexpectedly is answered with an error and counted (runtime.control.error; one
// that is not JSON or has wrong field types: runtime.control.bad_request).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include <x2sec/common/result.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/ikev2/engine.hpp>

namespace x2sec::runtime {

constexpr size_t kMaxControlFrame = 4 * 1024 * 1024;

// JSON text for the wire: never throws; a string that is not valid UTF-8 (which must not
// happen: peer-supplied octets are escaped with printable_text where they become text) has
// its bad octets replaced by U+FFFD instead of failing the whole reply.
std::string control_dump(const nlohmann::json& j);

Status write_frame(int fd, const std::string& payload);
Result<std::string> read_frame(int fd, size_t max_size = kMaxControlFrame);

// Connects, sends the request, returns the response (Error when the daemon is unreachable,
// the reply is malformed, or the reply says ok=false).
Result<nlohmann::json> control_request(const std::string& socket_path, const nlohmann::json& request,
                                       int timeout_ms = 10000);

// SA list <-> JSON; `now` turns established_at into an age in seconds.
nlohmann::json sas_to_json(const std::vector<ike::IkeSaInfo>& sas, Millis now);
// `swanctl --list-sas` style text from the JSON above.
std::string format_sas(const nlohmann::json& sas);
nlohmann::json event_to_json(const ike::Event& e, uint64_t seq);

}  // namespace x2sec::runtime
