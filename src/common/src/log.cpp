#include <mutex>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <x2sec/common/log.hpp>

namespace x2sec::log {
namespace {
std::mutex g_mutex;
spdlog::sink_ptr g_sink;
spdlog::level::level_enum g_level = spdlog::level::info;

spdlog::sink_ptr sink() {
    if (!g_sink) g_sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    return g_sink;
}
}  // namespace

std::shared_ptr<spdlog::logger> get(const std::string& module) {
    std::lock_guard lock(g_mutex);
    if (auto l = spdlog::get(module)) return l;
    auto l = std::make_shared<spdlog::logger>(module, sink());
    l->set_level(g_level);
    l->set_pattern("%H:%M:%S.%e %^%-5l%$ [%n] %v");
    // Line-buffered: every line written is flushed at once, so the lines just before a crash
    // (or a kill) are in the log file, not in a lost stdio buffer.
    l->flush_on(spdlog::level::trace);
    spdlog::register_logger(l);
    return l;
}

void set_level(const std::string& level) {
    std::lock_guard lock(g_mutex);
    g_level = spdlog::level::from_str(level);
    spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { l->set_level(g_level); });
}

void to_file(const std::string& path) {
    std::lock_guard lock(g_mutex);
    g_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path);
    spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) {
        l->sinks().clear();
        l->sinks().push_back(g_sink);
    });
}

}  // namespace x2sec::log
