#include "loader/script.hpp"

#include <cstring>

namespace kvms::loader {

std::optional<ScriptLine> script_line(const char* buf, size_t len) {
  if (len > 256) len = 256;
  if (len < 2 || buf[0] != '#' || buf[1] != '!') return std::nullopt;
  const char* end = static_cast<const char*>(std::memchr(buf, '\n', len));
  const bool cut = !end && len == 256;  // the line goes on past what was read (a shorter file simply ends)
  if (!end) end = buf + len;
  auto blank = [](char c) { return c == ' ' || c == '\t'; };
  const char* i = buf + 2;
  while (i < end && blank(*i)) ++i;
  const char* name = i;
  while (i < end && !blank(*i) && *i != '\0') ++i;
  if (i == name || (cut && i == end)) return std::nullopt;
  ScriptLine s{std::string(name, i), ""};
  while (i < end && blank(*i)) ++i;
  const char* arg_end = end;
  if (const void* nul = std::memchr(i, '\0', size_t(arg_end - i))) arg_end = static_cast<const char*>(nul);
  while (arg_end > i && blank(arg_end[-1])) --arg_end;  // not '\r': Linux keeps it ("bad interpreter")
  s.argument.assign(i, arg_end);
  return s;
}

}  // namespace kvms::loader
