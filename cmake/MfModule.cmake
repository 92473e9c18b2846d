# mf_add_module(NAME <target> SOURCES <files...> [PUBLIC_DEPS <targets...>]
#               [PRIVATE_DEPS <targets...>] [PKG <pkg-config names for .pc Requires>])
#
# Builds one module as a shared library <target> (SOVERSION = major) and a static
# library <target>_static from the same sources.  Public headers live in
# <module>/include/mailfilter/ and are installed to include/mailfilter/.  A .pc file
# is generated for the module.  Tests link the static library so that they can use
# internal (non-exported) symbols.
function(mf_add_module)
  cmake_parse_arguments(M "" "NAME;DESCRIPTION" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS;PKG" ${ARGN})
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
  set_target_properties(${M_NAME} PROPERTIES VERSION ${PROJECT_VERSION}
                        SOVERSION ${PROJECT_VERSION_MAJOR})
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

  string(REPLACE ";" " " pc_requires "${M_PKG}")
  set(pc_name ${M_NAME})
  set(pc_description "${M_DESCRIPTION}")
  configure_file(${PROJECT_SOURCE_DIR}/cmake/module.pc.in
                 ${CMAKE_CURRENT_BINARY_DIR}/${M_NAME}.pc @ONLY)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/${M_NAME}.pc
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endfunction()
