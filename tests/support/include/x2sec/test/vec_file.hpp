// Reader for tests/vectors/*.vec (Botan style): "name = value" lines, '#' comments, records
// separated by blank lines, optional "[Section]" lines that name the records after them.
// Hex values may contain spaces.  Throws std::runtime_error on a missing file.
#pragma once

#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>
#include <x2sec/common/bytes.hpp>

namespace x2sec::test {

struct VecRecord {
    std::string section;  // the last "[Section]" before the record ("" before any)
    std::map<std::string, std::string> fields;
    int line = 0;  // line of the record's first field, for failure messages
    const std::string& at(const std::string& k) const {
        auto it = fields.find(k);
        if (it == fields.end())
            throw std::runtime_error("vector record at line " + std::to_string(line) + " lacks '" + k + "'");
        return it->second;
    }
    Bytes hex(const std::string& k) const {
        auto b = from_hex(at(k));
        if (!b) throw std::runtime_error("vector record at line " + std::to_string(line) + ": '" + k + "' is not hex");
        return *b;
    }
    bool has(const std::string& k) const { return fields.count(k) != 0; }
};

inline std::string vector_path(const std::string& name) {
    return std::string(X2SEC_VECTOR_DIR) + "/" + name;
}

inline std::vector<VecRecord> read_vec_file(const std::string& name) {
    std::ifstream in(vector_path(name));
    if (!in) throw std::runtime_error("cannot open vector file " + vector_path(name));
    std::vector<VecRecord> out;
    VecRecord cur;
    std::string section;
    std::string line;
    int n = 0;
    auto trim = [](const std::string& s) {
        const auto b = s.find_first_not_of(" \t\r");
        const auto e = s.find_last_not_of(" \t\r");
        return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
    };
    while (std::getline(in, line)) {
        ++n;
        line = trim(line);
        if (!line.empty() && line[0] == '#') continue;
        if (line.empty()) {
            if (!cur.fields.empty()) out.push_back(std::move(cur));
            cur = VecRecord{};
            continue;
        }
        if (line.front() == '[' && line.back() == ']') {
            if (!cur.fields.empty()) out.push_back(std::move(cur));
            cur = VecRecord{};
            section = line.substr(1, line.size() - 2);
            continue;
        }
        const auto eq = line.find('=');
        if (eq == std::string::npos) throw std::runtime_error(vector_path(name) + ":" + std::to_string(n) + ": no '='");
        if (cur.fields.empty()) {
            cur.line = n;
            cur.section = section;
        }
        cur.fields[trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
    }
    if (!cur.fields.empty()) out.push_back(std::move(cur));
    return out;
}

}  // namespace x2sec::test
