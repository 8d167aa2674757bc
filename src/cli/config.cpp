// Reading the --config TOML file into flat key/value entries; options.cpp gives them meaning.
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <toml++/toml.h>

#include "cli/options.hpp"

namespace kvms::cli::detail {

std::vector<ConfigEntry> read_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError("cannot read config file " + path + ": " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw UsageError("cannot read config file " + path + ": " + std::strerror(errno));

  toml::table table;
  try {
    table = toml::parse(text.str(), path);
  } catch (const toml::parse_error& e) {
    std::string msg(e.description());
    throw UsageError(path + ":" + std::to_string(e.source().begin.line) + ": " + msg);
  }

  std::vector<ConfigEntry> out;
  for (auto&& [key, node] : table) {
    ConfigEntry e;
    e.key = std::string(key.str());
    e.line = static_cast<int>(node.source().begin.line ? node.source().begin.line : key.source().begin.line);
    auto where = [&] { return path + ":" + std::to_string(e.line) + ": " + e.key + ": "; };
    if (auto* b = node.as_boolean()) {
      e.value = b->get();
    } else if (auto* i = node.as_integer()) {
      e.value = static_cast<int64_t>(i->get());
    } else if (auto* f = node.as_floating_point()) {
      e.value = f->get();
    } else if (auto* s = node.as_string()) {
      e.value = s->get();
    } else if (auto* a = node.as_array()) {
      std::vector<std::string> items;
      for (auto&& item : *a) {
        auto* s = item.as_string();
        if (!s) throw UsageError(where() + "expected an array of strings");
        items.push_back(s->get());
      }
      e.value = std::move(items);
    } else {
      throw UsageError(where() + "unsupported value (expected a string, number, boolean or array of strings)");
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace kvms::cli::detail
