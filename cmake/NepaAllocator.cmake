# The training apps' memory allocator (issue 16 item 1; bench/allocator.py, bench/RESULTS.md section 8). With
# glibc's default every step maps its large activation blocks afresh and faults them in again (1.3 M minor faults
# per rank in 120 demo steps); tcmalloc keeps them: 1.12x the demo's img/s at 2 ranks, less memory than glibc
# tuned to keep them (1.09x). NEPA_ALLOCATOR auto links Debian's libtcmalloc-minimal4 when present and otherwise
# leaves glibc, which the apps then tune at start-up (src/train/runtime.cpp; the start-up log names the allocator
# either way); tcmalloc makes a missing library a configure error; glibc never links it.
set(NEPA_ALLOCATOR "auto" CACHE STRING "memory allocator of the training apps: auto | tcmalloc | glibc")
set_property(CACHE NEPA_ALLOCATOR PROPERTY STRINGS auto tcmalloc glibc)
if(NOT NEPA_ALLOCATOR MATCHES "^(auto|tcmalloc|glibc)$")
  message(FATAL_ERROR "NEPA_ALLOCATOR=${NEPA_ALLOCATOR}: expected auto, tcmalloc or glibc")
endif()
add_library(nepa_allocator INTERFACE)
if(NOT NEPA_ALLOCATOR STREQUAL "glibc")
  find_library(NEPA_TCMALLOC NAMES tcmalloc_minimal libtcmalloc_minimal.so.4)
  if(NEPA_TCMALLOC)
    # Nothing calls it by name: it replaces malloc for the whole process, LibTorch included.
    target_link_libraries(nepa_allocator INTERFACE -Wl,--no-as-needed ${NEPA_TCMALLOC} -Wl,--as-needed)
    message(STATUS "nepa: the training apps link tcmalloc (${NEPA_TCMALLOC})")
  elseif(NEPA_ALLOCATOR STREQUAL "tcmalloc")
    message(FATAL_ERROR "NEPA_ALLOCATOR=tcmalloc, but no libtcmalloc_minimal was found "
                        "(apt-get install libtcmalloc-minimal4, or -DNEPA_ALLOCATOR=glibc)")
  else()
    message(STATUS "nepa: no libtcmalloc_minimal: the training apps run on glibc's malloc, tuned at start-up "
                   "(apt-get install libtcmalloc-minimal4 for ~3 % more img/s and less memory)")
  endif()
endif()
