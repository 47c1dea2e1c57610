// Logging facade over spdlog: one named logger per module ("ike", "esp", "cmp", ...).
// Never pass key material to a logger.
#pragma once

#include <memory>
#include <spdlog/spdlog.h>
#include <string>

namespace x2sec::log {

std::shared_ptr<spdlog::logger> get(const std::string& module);
// Set the level of every module logger ("trace".."off"); default "info".
void set_level(const std::string& level);
// Send all module loggers to stderr (default) or to a file.  Every line is flushed as it is
// written (nothing is lost when the process dies right after).
void to_file(const std::string& path);

}  // namespace x2sec::log
