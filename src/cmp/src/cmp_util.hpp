#pragma once
#include <memory>
#include <openssl/cmp.h>

namespace x2sec::cmp {
struct CmpFree {
    void operator()(OSSL_CMP_MSG* m) const { OSSL_CMP_MSG_free(m); }
    void operator()(OSSL_CMP_CTX* c) const { OSSL_CMP_CTX_free(c); }
};
using MsgPtr = std::unique_ptr<OSSL_CMP_MSG, CmpFree>;
using CtxPtr = std::unique_ptr<OSSL_CMP_CTX, CmpFree>;
}  // namespace x2sec::cmp

namespace x2sec::cmp {
// PKIBody CHOICE tags (RFC 4210 5.1.2); OpenSSL 3.0 keeps its names for them internal.
enum Body : int {
    kIr = 0,
    kIp = 1,
    kCr = 2,
    kCp = 3,
    kP10cr = 4,
    kKur = 7,
    kKup = 8,
    kRr = 11,
    kRp = 12,
    kPkiConf = 19,
    kGenm = 21,
    kGenp = 22,
    kError = 23,
    kCertConf = 24,
    kPollReq = 25,
    kPollRep = 26,
};
}  // namespace x2sec::cmp
