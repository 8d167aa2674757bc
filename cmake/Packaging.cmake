# How kvmserver is released: the static build option, `cmake --install`, and the Debian package
# (`cpack -G DEB` in the build directory). packaging/README.md explains the pieces;
# tests/packaging/run.sh checks them.
include(${CMAKE_CURRENT_LIST_DIR}/Static.cmake)
include(GNUInstallDirs)

set(KVMS_PACKAGING_DIR ${CMAKE_SOURCE_DIR}/packaging)
set(KVMS_PACKAGE_MAINTAINER "kvmserver maintainers <maintainers@users.noreply.h-seed-74f45a4c.example>"
    CACHE STRING "Maintainer field of the Debian package")
set(KVMS_PACKAGE_SUMMARY "run unmodified Linux servers in KVM guests with per-request isolation")

# The man page and the Debian changelog are made at build time, in the build directory, and
# gzipped without a timestamp (Debian policy 12.1 and 12.7; lintian checks both).
set(KVMS_MAN_PAGE ${CMAKE_BINARY_DIR}/packaging/kvmserver.1)
set(KVMS_CHANGELOG ${CMAKE_BINARY_DIR}/packaging/changelog)
set(package_files kvmserver ${KVMS_CHANGELOG}.gz)
find_program(HELP2MAN help2man)
if(HELP2MAN)
  # help2man takes a usage's further lines only in the form "   or: kvmserver ..."; kvmserver
  # aligns them under "Usage: ". The wrapper rewrites just that, so SYNOPSIS lists all four commands.
  file(GENERATE OUTPUT ${CMAKE_BINARY_DIR}/packaging/help2man/kvmserver
    CONTENT "#!/bin/sh\n'$<TARGET_FILE:kvmserver>' \"$@\" | sed 's/^       kvmserver /   or: kvmserver /'\n"
    FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  add_custom_command(OUTPUT ${KVMS_MAN_PAGE}.gz
    COMMAND ${HELP2MAN} --no-info --section=1 --name=${KVMS_PACKAGE_SUMMARY}
            --include=${KVMS_PACKAGING_DIR}/man/kvmserver.h2m
            --output=${KVMS_MAN_PAGE} ${CMAKE_BINARY_DIR}/packaging/help2man/kvmserver
    COMMAND gzip -9nf ${KVMS_MAN_PAGE}
    DEPENDS kvmserver ${KVMS_PACKAGING_DIR}/man/kvmserver.h2m
    COMMENT "Man page from kvmserver --help"
    VERBATIM)
  install(FILES ${KVMS_MAN_PAGE}.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
  list(APPEND package_files ${KVMS_MAN_PAGE}.gz)
else()
  message(WARNING "help2man not found (Debian: help2man): no man page in `cmake --install` and the package")
endif()

string(TIMESTAMP KVMS_CHANGELOG_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)  # SOURCE_DATE_EPOCH if set
configure_file(${KVMS_PACKAGING_DIR}/debian/changelog.in ${KVMS_CHANGELOG} @ONLY)
add_custom_command(OUTPUT ${KVMS_CHANGELOG}.gz
  COMMAND gzip -9nkf ${KVMS_CHANGELOG}
  DEPENDS ${KVMS_CHANGELOG}
  VERBATIM)

# Everything `cmake --install` and cpack take besides the sources: part of the default build,
# except in sanitized builds, which are never packaged (help2man would run the sanitized binary).
set(package_files_in_all ALL)
if(KVMS_SANITIZE OR KVMS_FUZZ)
  set(package_files_in_all "")
endif()
add_custom_target(kvmserver_package_files ${package_files_in_all} DEPENDS ${package_files})

# `cmake --install` and cpack take what the build made and build nothing themselves: otherwise
# cpack would first build every test program and benchmark (minutes).
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)
# Debian's hardening: symbols bound at start, the GOT read-only after (lintian hardening-no-bindnow).
target_link_options(kvmserver PRIVATE -Wl,-z,relro,-z,now)

install(TARGETS kvmserver RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${KVMS_PACKAGING_DIR}/completion/kvmserver.bash
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME kvmserver)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${KVMS_CHANGELOG}.gz
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${KVMS_PACKAGING_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR} RENAME README.packaging.md)
# There is no licence file in the source tree yet (packaging/README.md); once there is, it goes to
# ${CMAKE_INSTALL_DOCDIR}/copyright here.
install(FILES ${KVMS_PACKAGING_DIR}/systemd/hello.toml ${KVMS_PACKAGING_DIR}/systemd/hello.env
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
# Relative to the prefix: /usr/lib/systemd/system in the package (the same directory as
# /lib/systemd/system on Debian 12's merged /usr), /usr/local/lib/systemd/system for a local
# install; systemd reads both.
install(FILES ${KVMS_PACKAGING_DIR}/systemd/kvmserver@.service ${KVMS_PACKAGING_DIR}/systemd/kvmserver@.socket
        DESTINATION lib/systemd/system)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME kvmserver)
set(CPACK_PACKAGE_CONTACT "${KVMS_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${KVMS_PACKAGE_SUMMARY}")
# Lines of at most 80 characters: CPack indents them but does not wrap.
string(JOIN "\n" CPACK_PACKAGE_DESCRIPTION
  "kvmserver runs an unmodified Linux x86-64 server program inside a tiny KVM"
  "guest whose system calls are emulated on the host. Nothing on the host is"
  "reachable unless granted: files, environment variables, network addresses."
  "Asked to serve, it pauses the program once it listens, forks that template"
  "into worker VMs and resets a worker after every connection or HTTP request,"
  "so no request sees another's state."
  "Includes the systemd units kvmserver@.service and kvmserver@.socket.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)  # the build is RelWithDebInfo; the package carries no debug info
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # Depends from the libraries kvmserver links (dpkg-shlibdeps)
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "systemd")
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)
include(CPack)
