// The "#!" line of a script execve runs (src/loader/script.cpp), as Linux's binfmt_script reads it.
#include <gtest/gtest.h>

#include <string>

#include "loader/script.hpp"

namespace kvms::loader {
namespace {

std::optional<ScriptLine> parse(const std::string& s) { return script_line(s.data(), s.size()); }

TEST(ScriptLine, InterpreterAndOneArgument) {
  auto s = parse("#!/bin/sh\necho hi\n");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->interpreter, "/bin/sh");
  EXPECT_EQ(s->argument, "");
  s = parse("#!  /usr/bin/env \t python3 -u  \nprint()\n");  // the argument is the rest, one string
  ASSERT_TRUE(s);
  EXPECT_EQ(s->interpreter, "/usr/bin/env");
  EXPECT_EQ(s->argument, "python3 -u");
  s = parse("#!/bin/sh");  // no newline: the whole of a short file is the line
  ASSERT_TRUE(s);
  EXPECT_EQ(s->interpreter, "/bin/sh");
}

TEST(ScriptLine, NotAScriptLinuxWouldRun) {
  EXPECT_FALSE(parse(""));
  EXPECT_FALSE(parse("#"));
  EXPECT_FALSE(parse("\x7f" "ELF"));
  EXPECT_FALSE(parse("#!\n"));        // no interpreter
  EXPECT_FALSE(parse("#!   \t \n"));  // blanks only
  // An interpreter that runs past the 256 bytes Linux looks at.
  EXPECT_FALSE(parse("#!/" + std::string(300, 'a') + "\n"));
}

TEST(ScriptLine, ArgumentCutAtTheBufferAndCarriageReturnKept) {
  auto s = parse("#!/bin/sh " + std::string(300, 'x') + "\n");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->argument.size(), 256u - std::string("#!/bin/sh ").size());
  s = parse("#!/bin/sh\r\n");  // Linux keeps the '\r': "/bin/sh\r" is the interpreter
  ASSERT_TRUE(s);
  EXPECT_EQ(s->interpreter, "/bin/sh\r");
}

}  // namespace
}  // namespace kvms::loader
