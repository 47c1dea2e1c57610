// Certificate profiles of the RA/CA: one per CMP path /.well-known/cmp/p/<name> (the default
// profile serves /.well-known/cmp and /pkix/), each with its own identity policy: which
// subjectAltName types (dNSName, iPAddress, uniformResourceIdentifier) a requester may ask for
// and the values each may take, relative to the requester's node identity (the `<EUI>.<realm>`
// dNSName of its vendor certificate, or of the operator certificate a kur renews).
//
// Patterns (dns, uri): literal text with the placeholders {identity} (the whole node identity),
// {eui} (its first label) and {realm} (the rest), and `*`, which matches one or more characters
// other than '.' (dns) or '/' (uri).  Matching is case-insensitive for dns and exact for uri.
// ip: CIDR ranges ("192.0.2.0/24", "2001:db8::/32"; a bare address is a /32 or /128).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>
#include <openssl/types.h>
#include <x2sec/common/result.hpp>

namespace x2sec::cmp {

enum class Approval { Immediate, Manual };

struct IssuanceProfile {
    std::string name;                               // "" for the default profile
    std::vector<std::string> dns = {"{identity}"};  // dNSName patterns; empty: dNSName not permitted
    std::vector<std::string> ip;                    // iPAddress ranges; empty: not permitted
    std::vector<std::string> uri;                   // URI patterns; empty: not permitted
    std::vector<std::string> required;              // "dns" | "ip" | "uri" that must be requested
    std::optional<int64_t> validity_days;           // overrides the server's policy
    Approval approval = Approval::Immediate;
    // Key types a request may carry ("p256", "p384", "rsa2048", "rsa3072"; pki::parse_key_alg
    // names); empty: any key the CA can certify.  Announced in the certReqTemplate (keySpec).
    std::vector<std::string> key_types;
    // Config errors: an unknown `required` type, a malformed CIDR, an empty pattern, a type
    // required but not permitted.
    Status validate() const;
};

// subjectAltNames of a certificate request, by type (ip in text form, e.g. "192.0.2.7").
struct RequestedNames {
    std::vector<std::string> dns, ip, uri;
    std::vector<std::string> other;      // names of other GeneralName types present
    std::vector<std::string> malformed;  // values that cannot be a name of their type
};

// The outcome of checking a request against a profile: ok, or the PKIFailureInfo bit, the
// text for the client and the counter suffix (cmp.reject.<counter>).
struct ProfileVerdict {
    int fail_bit = -1;
    std::string text;
    const char* counter = "";
    bool ok() const { return fail_bit < 0; }
};

// Checks the requested names (and the subject CN, when non-empty) against the profile for
// a requester holding `identities`.  check_values = false (policy allow_identity_mismatch)
// checks the types only.
ProfileVerdict check_request(const IssuanceProfile& p, const RequestedNames& names, const std::string& subject_cn,
                             const std::vector<std::string>& identities, bool check_values);

// The requested public key against the profile's key_types: badAlg (cmp.reject.key_type)
// when the profile does not permit it.
ProfileVerdict check_key_type(const IssuanceProfile& p, EVP_PKEY* key);
// "p256", "p384", "rsa2048", "rsa3072" for the key, "" for any other.
std::string key_type_of(EVP_PKEY* key);

// Pattern primitives (exposed for tests).
bool match_dns_pattern(const std::string& pattern, const std::string& value, const std::string& identity);
bool match_uri_pattern(const std::string& pattern, const std::string& value, const std::string& identity);
Result<bool> ip_in_range(const std::string& cidr, const std::string& ip);
// A pattern with {identity}, {eui} and {realm} filled in (a `*` stays).
std::string expand_pattern(const std::string& pattern, const std::string& identity);

}  // namespace x2sec::cmp
