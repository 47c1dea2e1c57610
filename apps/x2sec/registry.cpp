#include "registry.hpp"

namespace x2sec::app {

std::vector<CommandInfo>& registry() {
    static std::vector<CommandInfo> commands;
    return commands;
}

}  // namespace x2sec::app
