# -DKVMS_STATIC=ON: a fully static release kvmserver (-static: glibc, libstdc++, libgcc, libseccomp
# and libhttp_parser from their archives, fmt and toml++ compiled in from their headers), which runs
# on any x86-64 Linux whatever its glibc; packaging/README.md says what static glibc changes (host
# and user names resolve through NSS's built-in sources only).
option(KVMS_STATIC "Link kvmserver fully static (glibc, libstdc++, libseccomp, libhttp_parser; fmt and toml++ header-only)" OFF)
if(NOT KVMS_STATIC)
  return()
endif()

find_library(KVMS_SECCOMP_ARCHIVE libseccomp.a REQUIRED)          # libseccomp-dev
find_library(KVMS_HTTP_PARSER_ARCHIVE libhttp_parser.a REQUIRED)  # libhttp-parser-dev
# Debian ships fmt and toml++ as shared libraries only; both can be compiled in from their headers.
add_library(kvms_toml_header_only INTERFACE)
target_compile_definitions(kvms_toml_header_only INTERFACE TOML_HEADER_ONLY=1)

# kvms was declared with the shared forms (root CMakeLists.txt); swap each for its static form in
# what kvms compiles against and what it passes on to kvmserver, the tests and the benchmarks.
set(shared_forms fmt::fmt PkgConfig::TOMLPP PkgConfig::SECCOMP "${HTTP_PARSER_LIB}")
set(static_forms fmt::fmt-header-only kvms_toml_header_only "${KVMS_SECCOMP_ARCHIVE}" "${KVMS_HTTP_PARSER_ARCHIVE}")
foreach(property LINK_LIBRARIES INTERFACE_LINK_LIBRARIES)
  get_target_property(libraries kvms ${property})
  foreach(shared static IN ZIP_LISTS shared_forms static_forms)
    list(TRANSFORM libraries REPLACE "^${shared}$" "${static}")
  endforeach()
  set_target_properties(kvms PROPERTIES ${property} "${libraries}")
endforeach()

target_link_options(kvmserver PRIVATE -static)
