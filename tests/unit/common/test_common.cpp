#include <gtest/gtest.h>
#include <fstream>
#include <iterator>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <thread>
#include <vector>

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
    EXPECT_EQ(printable_text(hex("eda080")), "\\xed\\xa0\\x80");                // a surrogate
    EXPECT_EQ(printable_text(hex("e280ae")), "\\xe2\\x80\\xae");                // RIGHT-TO-LEFT OVERRIDE
    EXPECT_EQ(printable_text(hex("c285")), "\\xc2\\x85");                       // C1 NEL
    EXPECT_EQ(printable_text(hex("e3")), "\\xe3");                              // truncated sequence
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
    // The copy is its own storage: changing or clearing one leaves the other as it was.
    EXPECT_NE(b.data(), a.data());
    b[0] = 0xff;
    EXPECT_EQ(a[0], 1);
    b.clear();
    EXPECT_TRUE(b.empty());
    EXPECT_TRUE(ct_equal(a, hex("0102030405")));
    {
        SecureBytes copy(a);  // the copy constructor, and the copy's destructor
        EXPECT_TRUE(ct_equal(copy, a));
        copy[1] = 0;
    }
    EXPECT_TRUE(ct_equal(a, hex("0102030405"))) << "the copy's changes and wipe are its own";
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

// OsRng serves small requests from a per-thread block of RAND_bytes output (rng.cpp): no two
// draws may share octets, across block refills, sizes, threads and a fork.
TEST(Rng, OsRngNeverHandsOutTheSameOctetsTwice) {
    OsRng rng;
    std::set<Bytes> seen;
    // 2000 draws of 8..64 octets walk over many block refills, leftovers and the direct path.
    for (size_t i = 0; i < 2000; ++i) {
        const size_t n = 8 + (i % 8) * 8 + (i % 97 == 0 ? 300 : 0);
        Bytes b = rng.bytes(n);
        ASSERT_EQ(b.size(), n);
        ASSERT_TRUE(seen.insert(Bytes(b.begin(), b.begin() + 8)).second) << "draw " << i << " repeats an earlier one";
    }
    Bytes other;
    std::thread([&] { other = OsRng().bytes(32); }).join();
    Bytes mine = rng.bytes(32);
    EXPECT_NE(other, mine);
    EXPECT_EQ(seen.count(Bytes(other.begin(), other.begin() + 8)), 0u);
}

TEST(Rng, OsRngForkedChildDoesNotRepeatItsParent) {
    OsRng rng;
    (void)rng.bytes(16);  // the block now holds unread octets the child would inherit
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        Bytes b = OsRng().bytes(32);
        _exit(write(fds[1], b.data(), b.size()) == 32 ? 0 : 1);
    }
    close(fds[1]);
    Bytes child(32);
    ASSERT_EQ(read(fds[0], child.data(), child.size()), 32);
    close(fds[0]);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_NE(child, rng.bytes(32)) << "the child handed out its parent's buffered octets";
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

// The temporary file's name is not predictable: a symlink planted where the old name
// (path.tmp.<pid>) would have been is neither followed nor an obstacle, and no temporary is left.
TEST(File, AtomicWriteIgnoresPlantedTemporaryNames) {
    char dir[] = "/tmp/x2sec-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    std::string path = std::string(dir) + "/key.pem";
    std::string victim = std::string(dir) + "/victim";
    ASSERT_TRUE(write_file_atomic(victim, std::string_view("untouched"), 0644).ok());
    ASSERT_EQ(symlink(victim.c_str(), (path + ".tmp." + std::to_string(getpid())).c_str()), 0);
    ASSERT_EQ(symlink(victim.c_str(), (path + ".tmp").c_str()), 0);
    auto st = write_file_atomic(path, std::string_view("secret"), 0600);
    ASSERT_TRUE(st.ok()) << st.error().detail();
    EXPECT_EQ(*read_text_file(path), "secret");
    EXPECT_EQ(*read_text_file(victim), "untouched");
    struct stat sb {};
    ASSERT_EQ(lstat(path.c_str(), &sb), 0);
    EXPECT_TRUE(S_ISREG(sb.st_mode));
    EXPECT_EQ(sb.st_mode & 0777, 0600u);
    size_t entries = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
        ++entries;
        EXPECT_EQ(e.path().filename().string().find(".key.pem.tmp"), std::string::npos) << e.path();
    }
    EXPECT_EQ(entries, 4u);  // victim, key.pem and the two planted links
    std::filesystem::remove_all(dir);
}

// The mode is the one asked for even under a permissive or restrictive umask.
TEST(File, AtomicWriteModeIgnoresUmask) {
    char dir[] = "/tmp/x2sec-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    mode_t old = umask(0);
    auto a = write_file_atomic(std::string(dir) + "/a", std::string_view("x"), 0600);
    umask(077);
    auto b = write_file_atomic(std::string(dir) + "/b", std::string_view("x"), 0644);
    umask(old);
    ASSERT_TRUE(a.ok() && b.ok());
    struct stat sa {
    }, sb{};
    ASSERT_EQ(stat((std::string(dir) + "/a").c_str(), &sa), 0);
    ASSERT_EQ(stat((std::string(dir) + "/b").c_str(), &sb), 0);
    EXPECT_EQ(sa.st_mode & 0777, 0600u);
    EXPECT_EQ(sb.st_mode & 0777, 0644u);
    std::filesystem::remove_all(dir);
}

// Threads of one process (same pid) writing the same file concurrently: every write succeeds and
// the file always holds one complete version (with a pid-derived name they shared one temporary).
TEST(File, AtomicWriteConcurrentWritersNeverMix) {
    char dir[] = "/tmp/x2sec-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    std::string path = std::string(dir) + "/shared";
    constexpr int kThreads = 4, kWrites = 40;
    std::atomic<int> failures{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t)
        ts.emplace_back([&, t] {
            std::string body(4096, static_cast<char>('a' + t));
            for (int i = 0; i < kWrites; ++i)
                if (!write_file_atomic(path, std::string_view(body), 0600).ok()) ++failures;
        });
    for (auto& t : ts) t.join();
    EXPECT_EQ(failures.load(), 0);
    auto text = read_text_file(path);
    ASSERT_TRUE(text.ok());
    ASSERT_EQ(text->size(), 4096u);
    EXPECT_EQ(text->find_first_not_of((*text)[0]), std::string::npos);
    size_t entries = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) (void)e, ++entries;
    EXPECT_EQ(entries, 1u);
    std::filesystem::remove_all(dir);
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
