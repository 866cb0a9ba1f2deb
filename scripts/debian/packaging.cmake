# Debian packages (cpack -G DEB in the build folder):
#   fedge-common  fl-keygen, the fedge system user, /etc/fedge
#   fedge-server  fl-server, fl-plot, fedge-server.service, /etc/fedge/server.toml,
#                 the enrollment folder /etc/fedge/clients, the server's identity
#                 (made at install)
#   fedge-client  fl-client, fedge-client.service, /etc/fedge/client.toml, the
#                 device's identity (made at install)
# Library dependencies come from dpkg-shlibdeps. Each package's --help output
# and the README with its guides (docs/) go to /usr/share/doc/<package>/.
set(FL_DEB_DIR ${PROJECT_SOURCE_DIR}/scripts/debian)

install(TARGETS fl-keygen RUNTIME DESTINATION bin COMPONENT common)
install(DIRECTORY DESTINATION /etc/fedge COMPONENT common)
install(TARGETS fl-client RUNTIME DESTINATION bin COMPONENT client)
install(FILES ${FL_DEB_DIR}/fedge-client.service DESTINATION lib/systemd/system COMPONENT client)
install(FILES ${FL_DEB_DIR}/client.toml DESTINATION /etc/fedge COMPONENT client)
if(NOT FL_CLIENT_ONLY)
  install(TARGETS fl-server fl-plot RUNTIME DESTINATION bin COMPONENT server)
  install(FILES ${FL_DEB_DIR}/fedge-server.service DESTINATION lib/systemd/system
          COMPONENT server)
  install(FILES ${FL_DEB_DIR}/server.toml DESTINATION /etc/fedge COMPONENT server)
  install(DIRECTORY DESTINATION /etc/fedge/clients COMPONENT server)
endif()

# The tools' --help, written at install time by the binaries just installed.
foreach(pair "server;fl-server" "client;fl-client" "common;fl-keygen")
  list(GET pair 0 component)
  list(GET pair 1 tool)
  if(FL_CLIENT_ONLY AND component STREQUAL "server")
    continue()
  endif()
  install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION share/doc/fedge-${component}
          COMPONENT ${component})
  # The guides the README links to (docs/*.md), beside it as in the source tree.
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs DESTINATION share/doc/fedge-${component}
          COMPONENT ${component} FILES_MATCHING PATTERN "*.md")
  install(CODE "
    set(doc \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/share/doc/fedge-${component}\")
    file(MAKE_DIRECTORY \"\${doc}\")
    execute_process(COMMAND \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/bin/${tool}\" --help
                    OUTPUT_FILE \"\${doc}/${tool}--help.txt\" RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR \"${tool} --help failed (\${rc})\")
    endif()" COMPONENT ${component})
endforeach()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME fedge)
set(CPACK_PACKAGE_VENDOR "fedge")
set(CPACK_PACKAGE_CONTACT "fedge maintainers <fedge@localhost>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "file:///usr/share/doc/fedge-server/README.md")
set(CPACK_COMPONENTS_ALL common client)
if(NOT FL_CLIENT_ONLY)
  list(APPEND CPACK_COMPONENTS_ALL server)
endif()

set(CPACK_DEBIAN_COMMON_PACKAGE_NAME fedge-common)
set(CPACK_COMPONENT_COMMON_DESCRIPTION
    "fedge federated learning: fl-keygen and the fedge system user\nfl-keygen makes the Ed25519 and CURVE identities of servers and devices.")
set(CPACK_DEBIAN_COMMON_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_COMMON_PACKAGE_CONTROL_EXTRA "${FL_DEB_DIR}/fedge-common/postinst")
set(CPACK_DEBIAN_COMMON_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

set(CPACK_DEBIAN_SERVER_PACKAGE_NAME fedge-server)
set(CPACK_COMPONENT_SERVER_DESCRIPTION
    "fedge federated learning aggregator (fl-server) as a systemd service\nVerifies signed, quantized updates from enrolled devices over ZeroMQ/CURVE, aggregates\nthem and redistributes the signed global model; Prometheus metrics; fl-plot.")
set(CPACK_DEBIAN_SERVER_PACKAGE_DEPENDS "fedge-common (= ${PROJECT_VERSION})")
# fl-plot draws with gnuplot; the aggregator itself does not need it.
set(CPACK_DEBIAN_SERVER_PACKAGE_RECOMMENDS "gnuplot-nox | gnuplot")
set(CPACK_DEBIAN_SERVER_PACKAGE_CONTROL_EXTRA
    "${FL_DEB_DIR}/fedge-server/postinst;${FL_DEB_DIR}/fedge-server/prerm;${FL_DEB_DIR}/fedge-server/conffiles")
set(CPACK_DEBIAN_SERVER_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

set(CPACK_DEBIAN_CLIENT_PACKAGE_NAME fedge-client)
set(CPACK_COMPONENT_CLIENT_DESCRIPTION
    "fedge federated learning device (fl-client) as a systemd service\nFine-tunes the federation's compressed model on the device's own data with LibTorch and\nsends signed, quantized deltas; low priority and a CPU quota by default.")
set(CPACK_DEBIAN_CLIENT_PACKAGE_DEPENDS "fedge-common (= ${PROJECT_VERSION})")
set(CPACK_DEBIAN_CLIENT_PACKAGE_CONTROL_EXTRA
    "${FL_DEB_DIR}/fedge-client/postinst;${FL_DEB_DIR}/fedge-client/prerm;${FL_DEB_DIR}/fedge-client/conffiles")
set(CPACK_DEBIAN_CLIENT_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

include(CPack)
