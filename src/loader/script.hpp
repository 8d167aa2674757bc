#pragma once
// Scripts that execve runs through an interpreter: the "#!" line.
#include <cstddef>
#include <optional>
#include <string>

namespace kvms::loader {

struct ScriptLine {
  std::string interpreter, argument;  // argument: empty when the line has none
};

// The "#!" line at the start of buf (the file's first bytes, at most 256 of them are looked at, as
// Linux's binfmt_script does): the interpreter up to the first blank, then at most one argument,
// the rest of the line with its outer blanks trimmed. nullopt when buf does not start with "#!",
// names no interpreter, or the interpreter runs past the 256 bytes (Linux: ENOEXEC); an argument
// cut off there is cut, as Linux does.
std::optional<ScriptLine> script_line(const char* buf, size_t len);

}  // namespace kvms::loader
