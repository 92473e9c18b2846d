# mf_add_module(NAME <target> DESCRIPTION <text> SOURCES <files...>
#               [PUBLIC_DEPS <targets...>] [PRIVATE_DEPS <targets...>]
#               [PKG_REQUIRES <pkg-config names>] [PKG_REQUIRES_PRIVATE <names>])
#
# Builds one module as a shared library <target> (SOVERSION = major) and a static
# library <target>_static from the same sources, both installed and exported as
# mailfilter::<target> and mailfilter::<target>_static (cmake/mailfilterConfig.cmake.in).
# Public headers live in <module>/include/mailfilter/ and are installed to
# include/mailfilter/.  Tests link the static library so that they can use internal
# (non-exported) symbols.
#
# A relocatable <target>.pc is generated (prefix from ${pcfiledir}):
#   Requires:          PKG_REQUIRES: every library whose types or headers the public
#                      headers expose (our own modules get "= <version>"),
#   Requires.private:  PKG_REQUIRES_PRIVATE: libraries used only inside,
#   Libs.private:      the thread flags when Threads::Threads is a dependency.
# `pkg-config --static` then lists everything a static link needs.
function(mf_add_module)
  cmake_parse_arguments(M "" "NAME;DESCRIPTION"
    "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS;PKG_REQUIRES;PKG_REQUIRES_PRIVATE" ${ARGN})
  add_library(${M_NAME}_obj OBJECT ${M_SOURCES})
  target_include_directories(${M_NAME}_obj PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  # core/seam: internal headers shared by every module (the allocation seam).
  target_include_directories(${M_NAME}_obj PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}
    ${PROJECT_SOURCE_DIR}/core/seam)
  target_compile_definitions(${M_NAME}_obj PRIVATE MF_BUILDING)
  target_link_libraries(${M_NAME}_obj PUBLIC mf_common ${M_PUBLIC_DEPS} PRIVATE ${M_PRIVATE_DEPS})

  add_library(${M_NAME} SHARED $<TARGET_OBJECTS:${M_NAME}_obj>)
  add_library(${M_NAME}_static STATIC $<TARGET_OBJECTS:${M_NAME}_obj>)
  set_target_properties(${M_NAME}_static PROPERTIES OUTPUT_NAME ${M_NAME})
  # Installed, each shared library finds its siblings next to itself ($ORIGIN):
  # a program that links only libmailfilter.so (the linker's --as-needed drops
  # the others) still loads libmfcore.so from a prefix the loader does not search.
  # Lintian accepts $ORIGIN.
  set_target_properties(${M_NAME} PROPERTIES VERSION ${PROJECT_VERSION}
                        SOVERSION ${PROJECT_VERSION_MAJOR} INSTALL_RPATH "$ORIGIN")
  foreach(t ${M_NAME} ${M_NAME}_static)
    target_include_directories(${t} PUBLIC
      $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
      $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
    target_link_libraries(${t} PUBLIC mf_common PRIVATE ${M_PRIVATE_DEPS})
  endforeach()
  # Shared links its deps' shared libs, static its deps' static libs.
  foreach(d ${M_PUBLIC_DEPS})
    if(TARGET ${d}_static)
      target_link_libraries(${M_NAME} PUBLIC ${d})
      target_link_libraries(${M_NAME}_static PUBLIC ${d}_static)
    else()
      target_link_libraries(${M_NAME} PUBLIC ${d})
      target_link_libraries(${M_NAME}_static PUBLIC ${d})
    endif()
  endforeach()

  install(TARGETS ${M_NAME} ${M_NAME}_static EXPORT mailfilterTargets
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/include/mailfilter
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

  # .pc file.  Our own modules are required at exactly this version.
  set(req "")
  foreach(r ${M_PKG_REQUIRES})
    if(TARGET ${r}_static)
      list(APPEND req "${r} = ${PROJECT_VERSION}")
    else()
      list(APPEND req "${r}")
    endif()
  endforeach()
  string(REPLACE ";" ", " pc_requires "${req}")
  string(REPLACE ";" ", " pc_requires_private "${M_PKG_REQUIRES_PRIVATE}")
  set(pc_libs_private "")
  if("Threads::Threads" IN_LIST M_PUBLIC_DEPS OR "Threads::Threads" IN_LIST M_PRIVATE_DEPS)
    set(pc_libs_private "${CMAKE_THREAD_LIBS_INIT}")
  endif()
  mf_pc_dirs(pc_prefix pc_libdir pc_includedir)
  set(pc_name ${M_NAME})
  set(pc_description "${M_DESCRIPTION}")
  configure_file(${PROJECT_SOURCE_DIR}/cmake/module.pc.in
                 ${CMAKE_CURRENT_BINARY_DIR}/${M_NAME}.pc @ONLY)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/${M_NAME}.pc
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endfunction()

# mf_pc_dirs(<prefix var> <libdir var> <includedir var>): the prefix, libdir and
# includedir lines of a .pc file installed to ${CMAKE_INSTALL_LIBDIR}/pkgconfig.
# With relative install dirs (the usual case) the prefix is found from the .pc
# file's own location (${pcfiledir}), so the installed tree works wherever
# `cmake --install --prefix` (or DESTDIR, or unpacking a package) put it.
function(mf_pc_dirs out_prefix out_libdir out_includedir)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
    set(prefix "${CMAKE_INSTALL_PREFIX}")
    set(libdir "${CMAKE_INSTALL_LIBDIR}")
  else()
    file(RELATIVE_PATH rel "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
    string(REGEX REPLACE "/$" "" rel "${rel}")
    set(prefix "\${pcfiledir}/${rel}")
    set(libdir "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
  endif()
  if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
    set(includedir "${CMAKE_INSTALL_INCLUDEDIR}")
  else()
    set(includedir "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
  endif()
  set(${out_prefix} "${prefix}" PARENT_SCOPE)
  set(${out_libdir} "${libdir}" PARENT_SCOPE)
  set(${out_includedir} "${includedir}" PARENT_SCOPE)
endfunction()

# mf_pkg_dependency(<name> <pkg-config module>): finds an external library with
# pkg-config as the imported target PkgConfig::<name>, and records it so that the
# installed CMake package (mailfilterConfig.cmake) recreates the same target for
# its users: the exported link interfaces name it.
function(mf_pkg_dependency name module)
  pkg_check_modules(${name} REQUIRED IMPORTED_TARGET ${module})
  set_property(GLOBAL APPEND PROPERTY MF_PKG_DEPENDENCIES "${name}=${module}")
endfunction()
