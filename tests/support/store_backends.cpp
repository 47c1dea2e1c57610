#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <utility>
#include <x2sec/test/store_backends.hpp>

namespace fs = std::filesystem;

namespace x2sec::test {

PgCluster::PgCluster(std::string cluster_dir) {
    const std::string bin = kBin;
    if (!fs::exists(bin + "/initdb")) {
        skip_reason = "PostgreSQL 15 is not installed (postgresql-15)";
        return;
    }
    if (getuid() == 0 && std::system("id postgres >/dev/null 2>&1") != 0) {
        skip_reason = "running as root and there is no 'postgres' user to run the cluster";
        return;
    }
    dir = std::move(cluster_dir);
    fs::create_directories(dir);
    if (getuid() == 0 && std::system(("chown postgres " + dir).c_str()) != 0) {
        skip_reason = "cannot chown the cluster directory to postgres";
        return;
    }
    const std::string init =
        as_pg(bin + "/initdb -A trust -U postgres -D " + dir + "/data >" + dir + "/initdb.log 2>&1");
    if (std::system(init.c_str()) != 0) {
        skip_reason = "initdb failed (see " + dir + "/initdb.log)";
        return;
    }
    const std::string start = as_pg(bin + "/pg_ctl -D " + dir + "/data -l " + dir + "/pg.log -w -t 30 -o \"-k " + dir +
                                    " -h '' -F\" start >/dev/null 2>&1");
    if (std::system(start.c_str()) != 0) {
        skip_reason = "pg_ctl start failed (see " + dir + "/pg.log)";
        return;
    }
    started = true;
    conninfo = "host=" + dir + " dbname=postgres user=postgres";
}

PgCluster::~PgCluster() {
    if (started)
        (void)std::system(
            as_pg(std::string(kBin) + "/pg_ctl -D " + dir + "/data -m immediate stop >/dev/null 2>&1").c_str());
    if (!dir.empty()) fs::remove_all(dir);
}

std::string PgCluster::as_pg(const std::string& cmd) const {
    return getuid() == 0 ? "runuser -u postgres -- " + cmd : cmd;
}

int PgCluster::psql(const std::string& sql) const {
    const std::string cmd =
        as_pg(std::string(kBin) + "/psql -q -h " + dir + " -U postgres -d postgres -c '" + sql + "' >/dev/null 2>&1");
    return std::system(cmd.c_str());
}

int PgCluster::drop_store_tables() const {
    return psql(
        "DROP TABLE IF EXISTS open_requests, certificates, transactions, crl_number, crl_state, pending, audit");
}

SqliteFile::SqliteFile(std::string name, const std::string& prefix) {
    std::replace(name.begin(), name.end(), '/', '_');
    path = "/tmp/" + prefix + "-" + std::to_string(getpid()) + "-" + name + ".db";
    remove();
}

SqliteFile::~SqliteFile() {
    remove();
}

void SqliteFile::remove() const {
    for (const auto* s : {"", "-wal", "-shm"}) fs::remove(path + s);
}

}  // namespace x2sec::test
