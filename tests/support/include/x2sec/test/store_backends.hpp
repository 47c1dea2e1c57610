// Back-ends for the cmp::Store tests: a throwaway PostgreSQL 15 cluster (initdb + pg_ctl on a
// unix socket in a temporary directory, no TCP listener) and a fresh SQLite file per test.
//
//   test::PgCluster& pg() {
//       static test::PgCluster c("/tmp/x2sec-pg-" + std::to_string(getpid()));
//       return c;
//   }
//   if (!pg().started) GTEST_SKIP() << "PostgreSQL store tests skipped: " << pg().skip_reason;
//   ASSERT_EQ(pg().drop_store_tables(), 0);
//   auto s = cmp::open_postgres_store(pg().conninfo);
//
// These tests skip, never pass silently, when PostgreSQL cannot run here: skip_reason says why.
#pragma once

#include <string>

namespace x2sec::test {

// One PostgreSQL 15 cluster in `dir` (created, and removed again by the destructor), started by
// the constructor and stopped by the destructor; make it a function-local static so that one
// cluster serves the whole test program.  When it cannot start, `started` is false and
// `skip_reason` names the cause (not installed, no 'postgres' user as root, initdb or pg_ctl
// failed, with the log to read).  As root the cluster runs as the user 'postgres'.
struct PgCluster {
    static constexpr const char* kBin = "/usr/lib/postgresql/15/bin";

    std::string dir, conninfo, skip_reason;
    bool started = false;

    explicit PgCluster(std::string cluster_dir);
    ~PgCluster();
    PgCluster(const PgCluster&) = delete;
    PgCluster& operator=(const PgCluster&) = delete;

    // `cmd` as the cluster's owner: prefixed by "runuser -u postgres -- " when running as root.
    std::string as_pg(const std::string& cmd) const;
    // Runs one SQL statement with psql on the cluster's socket as the user postgres (output
    // discarded): std::system's status, 0 on success.  `sql` goes inside single quotes.
    int psql(const std::string& sql) const;
    // Drops every table of a cmp::Store (open_postgres_store creates them again): a fresh schema
    // for each test.  std::system's status, 0 on success.
    int drop_store_tables() const;
};

// A fresh SQLite file for one test, /tmp/<prefix>-<pid>-<name>.db ('/' in the name, as a
// parameterised test's name has, becomes '_'): it and its -wal / -shm are removed before the
// test and when it ends.
struct SqliteFile {
    std::string path;
    explicit SqliteFile(std::string name, const std::string& prefix = "x2sec-store");
    ~SqliteFile();
    SqliteFile(const SqliteFile&) = delete;
    SqliteFile& operator=(const SqliteFile&) = delete;
    void remove() const;
};

}  // namespace x2sec::test
