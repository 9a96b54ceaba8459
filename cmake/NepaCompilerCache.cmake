# ccache across builds: a clean clone rebuilding the same sources (CI on the machine that just built them)
# takes seconds instead of minutes. The sloppiness settings are what ccache needs to cache TUs that use a
# precompiled header at all.
if(NEPA_USE_CCACHE)
  find_program(NEPA_CCACHE ccache)
  if(NEPA_CCACHE)
    set(CMAKE_CXX_COMPILER_LAUNCHER
        ${CMAKE_COMMAND} -E env
        "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
        "CCACHE_BASEDIR=${CMAKE_SOURCE_DIR}"
        ${NEPA_CCACHE})
    message(STATUS "nepa: compiling through ${NEPA_CCACHE}")
  endif()
endif()
