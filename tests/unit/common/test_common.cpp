#include <gtest/gtest.h>
#include <fstream>
#include <iterator>
#include <sys/stat.h>
#include <unistd.h>

#include <x2sec/common/bytes.hpp>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/codec.hpp>
#include <x2sec/common/counters.hpp>
#include <x2sec/common/file.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/common/rng.hpp>

using namespace x2sec;

TEST(Hex, RoundTripAndRejectsBadInput) {
    EXPECT_EQ(to_hex(hex("00ff10Ab")), "00ff10ab");
    EXPECT_EQ(from_hex("0a 0b:0c")->size(), 3u);
    EXPECT_FALSE(from_hex("abc").has_value());
    EXPECT_FALSE(from_hex("zz").has_value());
}

TEST(PrintableText, EscapesWhatIsNotPrintableUtf8) {
    EXPECT_EQ(printable_text(std::string_view("b.henb.example")), "b.henb.example");
    EXPECT_EQ(printable_text(hex("fffe41")), "\\xff\\xfeA");
    EXPECT_EQ(printable_text(std::string_view("a\nb\x7f\\")), "a\\x0ab\\x7f\\\\");
    EXPECT_EQ(printable_text(std::string_view("caf\xc3\xa9")), "caf\xc3\xa9");  // U+00E9 passes
    EXPECT_EQ(printable_text(hex("c0af")), "\\xc0\\xaf");                       // overlong '/'
    EXPECT_EQ(printable_text(hex("eda080")), "\\xed\\xa0\\x80");             // a surrogate
    EXPECT_EQ(printable_text(hex("e280ae")), "\\xe2\\x80\\xae");             // RIGHT-TO-LEFT OVERRIDE
    EXPECT_EQ(printable_text(hex("c285")), "\\xc2\\x85");                       // C1 NEL
    EXPECT_EQ(printable_text(hex("e3")), "\\xe3");                               // truncated sequence
    // Injective: the escape of "\xff" differs from the escape of the octet ff.
    EXPECT_NE(printable_text(std::string_view("\\xff")), printable_text(hex("ff")));
    // Every octet string comes out as printable ASCII or printable UTF-8.
    Bytes all;
    for (int i = 0; i < 256; ++i) all.push_back(static_cast<uint8_t>(i));
    for (char c : printable_text(all)) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << int(c);
}

TEST(Log, EveryLineReachesTheFileAtOnce) {
    char dir[] = "/tmp/x2sec-log-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    std::string path = std::string(dir) + "/x2sec.log";
    log::to_file(path);
    log::get("test")->info("line before a crash");
    // No flush, no shutdown: the line is in the file already.
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("line before a crash"), std::string::npos) << text;
    ::unlink(path.c_str());
    ::rmdir(dir);
}

TEST(Reader, IsBoundsCheckedAndSticky) {
    Bytes b = hex("0102030405");
    Reader r(b);
    EXPECT_EQ(r.u16(), 0x0102);
    EXPECT_EQ(r.u32(), 0u);  // only 3 left
    EXPECT_FALSE(r.ok());
    EXPECT_NE(r.failure().find("truncated"), std::string::npos);
    EXPECT_EQ(r.u8(), 0);  // sticky
    EXPECT_EQ(r.remaining(), 0u);
}

TEST(Reader, SubReaderFailsParentOnShortInput) {
    Bytes b = hex("0102");
    Reader r(b);
    Reader s = r.sub(5);
    EXPECT_FALSE(r.ok());
    EXPECT_FALSE(s.ok());
}

TEST(Writer, BackPatchesLengths) {
    Writer w;
    w.u8(0xaa);
    auto m = w.reserve16();
    w.bytes(hex("010203"));
    w.patch(m, 0);
    EXPECT_EQ(to_hex(w.data()), "aa0006010203");
    Writer w2;
    auto m2 = w2.reserve32();
    w2.u64(1);
    w2.patch(m2);
    EXPECT_EQ(to_hex(w2.data()), "0000000c0000000000000001");
}

TEST(SecureBytes, CopiesMovesAndWipes) {
    SecureBytes a(hex("0102030405"));
    SecureBytes b = a;
    EXPECT_TRUE(ct_equal(a, b));
    SecureBytes c = std::move(a);
    EXPECT_TRUE(a.empty());
    EXPECT_EQ(c.slice(1, 2).size(), 2u);
    EXPECT_EQ(c.slice(1, 2)[0], 2);
    c.append(hex("06"));
    EXPECT_EQ(c.size(), 6u);
}

TEST(Rng, DeterministicIsRepeatable) {
    DeterministicRng a(7), b(7), c(8);
    EXPECT_EQ(a.bytes(40), b.bytes(40));
    EXPECT_NE(a.bytes(16), c.bytes(16));
}

TEST(Counters, CountByName) {
    Counters c;
    c.inc("ike.rx.invalid_syntax");
    c.inc("ike.rx.invalid_syntax", 2);
    EXPECT_EQ(c.get("ike.rx.invalid_syntax"), 3u);
    EXPECT_EQ(c.get("nothing"), 0u);
    EXPECT_EQ(c.snapshot().size(), 1u);
}

TEST(File, AtomicWriteWithMode) {
    char dir[] = "/tmp/x2sec-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    std::string path = std::string(dir) + "/key.pem";
    ASSERT_TRUE(write_file_atomic(path, std::string_view("secret"), 0600).ok());
    struct stat st {};
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_EQ(*read_text_file(path), "secret");
    ASSERT_TRUE(write_file_atomic(path, std::string_view("other"), 0600).ok());
    EXPECT_EQ(*read_text_file(path), "other");
    EXPECT_FALSE(read_file(std::string(dir) + "/missing").ok());
    EXPECT_FALSE(write_file_atomic(std::string(dir) + "/no/such/dir", std::string_view("x")).ok());
    unlink(path.c_str());
    rmdir(dir);
}

TEST(TrafficSelector, PrefixAndContains) {
    auto ts = TrafficSelector::from_prefix(*IpAddress::parse("192.0.2.77"), 24, 17, 2152, 2152);
    EXPECT_EQ(ts.start_addr.to_string(), "192.0.2.0");
    EXPECT_EQ(ts.end_addr.to_string(), "192.0.2.255");
    EXPECT_TRUE(ts.contains(*IpAddress::parse("192.0.2.1"), 17, 2152));
    EXPECT_FALSE(ts.contains(*IpAddress::parse("192.0.2.1"), 6, 2152));
    EXPECT_FALSE(ts.contains(*IpAddress::parse("198.51.100.1"), 17, 2152));
    EXPECT_EQ(ts.to_string(), "192.0.2.0/24[udp/2152]");
    auto v6 = TrafficSelector::from_prefix(*IpAddress::parse("2001:db8::1"), 128);
    EXPECT_EQ(v6.to_string(), "2001:db8::1/128");
}

TEST(MemoryBackend, RecordsInstallAndRemove) {
    MemoryChildSaBackend be;
    ChildSaParams p;
    p.spi_in = 0x1234;
    ASSERT_TRUE(be.install(p).ok());
    EXPECT_FALSE(be.install(p).ok());
    EXPECT_TRUE(be.find(0x1234).has_value());
    ASSERT_TRUE(be.remove(0x1234).ok());
    EXPECT_FALSE(be.remove(0x1234).ok());
    EXPECT_EQ(be.install_count(), 1u);
}
