// AES-GCM ESP test cases of draft-mcgrew-gcm-test-01 (the GCM test material for RFC 4106):
// whole ESP packets, byte for byte.  packet = SPI | low 32 bits of the sequence number |
// explicit IV | ciphertext | ICV; plain = payload | padding | pad length | next header.
// The draft's packets carry next header 1 even around IPv4 payloads, so these are checked at
// the codec level (seal/open), not through the tunnel-mode next-header check.
#pragma once
#include <cstdint>

struct GcmEspVector {
    const char* name;
    const char* key;  // AES key || 4-octet salt (RFC 4106 KEYMAT layout)
    uint64_t seq;     // full sequence number
    bool esn;         // AAD = SPI || ESN-64, else SPI || seq-32
    const char* plain;
    const char* packet;
};

inline const GcmEspVector kGcmEspVectors[] = {
    {"tc1_aes128_esn",
     "4c80cdefbb5d10da906ac73c3613a634"
     "2e443b68",
     0x8765432100000000ULL, true,
     "45000048699a000080114db7c0a80102c0a801010a9bf15638d3010000010000"
     "00000000045f736970045f756470037369700963796265726369747902646b00"
     "0021000101020201",
     "00004321000000004956ed7e3b244cfe"
     "fecf537e729d5b07dc30df528dd22b768d1b98736696a6fd348509fa13ceac34"
     "cfa2436f14a3f3cf65925bf1f4a13c5d15b21e1884f5ff6247aeabb786b93bce"
     "61bc17d768fd9732459018148f6cbe722fd04796562dfdb4"},
    {"tc2_aes128_seq32",
     "feffe9928665731c6d6a8f9467308308"
     "cafebabe",
     0x0a, false,
     "4500003e698f000080114dccc0a80102c0a801010a980035002a2343b2d00100"
     "00010000000000000373697009637962"
     "65726369747902646b00000100010001",
     "0000a5f80000000afacedbaddecaf888"
     "deb22cd9b07c72c16e3a65beeb8df304a5a5897d33ae530f1ba76d5d114d2a5c"
     "3de81827c10e9a4f51330d0eec416642cfbb85a5b47e48a4ec3b9ba95d918bd1"
     "83b70d3aa8bc6ee4c309e9d85a41ad4a"},
    {"tc3_aes256_seq32",
     "abbccddef00112233445566778899aababbccddef00112233445566778899aab"
     "11223344",
     0x02, false,
     "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee000000000"
     "7002400020bf0000020405b40101040201020201",
     "4a2cbfe3000000020102030405060708"
     "ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763"
     "748a637985771d347f0545659f14e99def842d8eb335f4eecfdbf831824b4c49"
     "15956c96"},
    {"tc5_aes128_esn",
     "3de09874b388e6491988d0c3607eae1f"
     "57690e43",
     0x1010101010101010ULL, true,
     "4500003c99c300008001cb7c40679318010101010800085c0200430061626364"
     "65666768696a6b6c6d6e6f707172737475767761626364656667686901020201",
     "42f67e3f101010104e280000a2fca1a3"
     "fba2caa4853cf9f0f22cb10d86dd83b0fec75691cf1a04b00d1138ec9c357917"
     "65acbd8701ad79845bf9fe3fba487bc91755e6662b4c8d0d1f5e22739530320a"
     "e0d731cc978ecafaeae88f00e80d6e48"},
    {"tc8_aes128_esn_hi0",
     "abbccddef00112233445566778899aab"
     "decaf888",
     0x01, true,
     "4500004933ba00007f119106c3fb1d10c2b1d326c02831ce0035dd7b800302d5"
     "00004e20001e8c18d75b81dc91baa0476b91b924b280389d92c963bac046ec95"
     "9b6266c04722b14923010101",
     "0000010000000001cafedebaceface74"
     "18a6fd42f72cbf4ab2a2ea901f73d814e3e7f243d95412e1c349c1d2fbec168f"
     "9190feebaf2cb01984e65863965d7472b79da345e0e780191f0d2f0e0f496c22"
     "6f2127b27db35724e7845d68651f57e65f354f75ff17015769623436"},
    {"tc9_aes256_esn",
     "abbccddef00112233445566778899aababbccddef00112233445566778899aab"
     "73616c74",
     0x156f3126dd0db99bULL, true,
     "45080028732c00004006e9f90a0106120a01038f06b88023dd6bafbecb712602"
     "50101f646d540001",
     "17405e67dd0db99b616e640169766563"
     "f2d69ecdbd5a0d5b8d5ef38bad4da58d1f278fde98ef67549d524a3018d9a57f"
     "f4d3a31ce673119e451626c2415771e3b7eebca614c89b35"},
    {"tc12_aes128_seq_ffffffff_empty",
     "7d773d00c144c525ac619d18c84a3f47"
     "d9664267",
     0xffffffffULL, false, "01020201",
     "335467aeffffffff43457e9182443bc6"
     "437f866bcb3f699fe9b0822bac961c4504bef270"},
    {"tc14_aes256_esn_max",
     "6c6567616c697a656d6172696a75616e61616e64646f69746265666f72656961"
     "7475726e",
     0xffffffffffffffffULL, true,
     "45000030da3a00008001df3bc0a80005c0a800010800c6cd0200070061626364"
     "65666768696a6b6c6d6e6f707172737401020201",
     "796b6963ffffffff333021696765746d"
     "f97ab2aa356d8edce17644ac8c78e25dd24dedbb29ebf1b64a274b39b49c3a86"
     "4cd3d78ca4ae68a32b42458fb57dbe821dcc63b9d0937ba2945f669368661a32"
     "9fb4c053"},
};
