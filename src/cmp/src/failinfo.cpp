#include <x2sec/cmp/failinfo.hpp>

namespace x2sec::cmp {

const char* failinfo_name(int bit) {
    static const char* const names[] = {
        "badAlg",           "badMessageCheck",     "badRequest",          "badTime",           "badCertId",
        "badDataFormat",    "wrongAuthority",      "incorrectData",       "missingTimeStamp",  "badPOP",
        "certRevoked",      "certConfirmed",       "wrongIntegrity",      "badRecipientNonce", "timeNotAvailable",
        "unacceptedPolicy", "unacceptedExtension", "addInfoNotAvailable", "badSenderNonce",    "badCertTemplate",
        "signerNotTrusted", "transactionIdInUse",  "unsupportedVersion",  "notAuthorized",     "systemUnavail",
        "systemFailure",    "duplicateCertReq",
    };
    if (bit < 0 || bit >= static_cast<int>(sizeof names / sizeof names[0])) return "unknown";
    return names[bit];
}

}  // namespace x2sec::cmp
