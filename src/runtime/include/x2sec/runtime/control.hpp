// The IKE daemon's control socket: a unix stream socket; each connection carries one request
// and one response, each a 4-octet big-endian length followed by that many octets of JSON.
//
//   {"cmd":"list-sas"}                                  -> {"ok":true,"sas":[...]}, in one or more
//                                                        frames (below)
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
//
// No frame is larger than kMaxControlFrame (a defence against a bad peer on the socket), but
// a list-sas reply has no size limit: with tens of thousands of SAs (some 700 octets of JSON
// each) it is streamed as several frames on the same connection, each a complete JSON object
// {"ok":true,"sas":[...],"more":true} holding the next SAs of one snapshot, the last one
// without "more".  control_request() reads them all and returns one reply with every SA.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include <x2sec/common/result.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/ikev2/engine.hpp>

namespace x2sec::runtime {

constexpr size_t kMaxControlFrame = 4 * 1024 * 1024;
// SA JSON octets per list-sas frame (the frame closes before the SA that would pass this).
constexpr size_t kListSasChunk = 1024 * 1024;
// The client's bound on a whole multi-frame reply (over a million SAs).
constexpr size_t kMaxControlReply = size_t{1} << 30;

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
nlohmann::json sa_to_json(const ike::IkeSaInfo& s, Millis now);
nlohmann::json sas_to_json(const std::vector<ike::IkeSaInfo>& sas, Millis now);
// The payloads (unframed) of a list-sas reply: {"ok":true,"sas":[...],"more":true} objects of
// at most `chunk_octets` of SA JSON each (but at least one SA), the last without "more"; one
// payload with an empty list when there are no SAs.
std::vector<std::string> list_sas_payloads(const std::vector<ike::IkeSaInfo>& sas, Millis now,
                                           size_t chunk_octets = kListSasChunk);
// `swanctl --list-sas` style text from the JSON above.
std::string format_sas(const nlohmann::json& sas);
nlohmann::json event_to_json(const ike::Event& e, uint64_t seq);

}  // namespace x2sec::runtime
