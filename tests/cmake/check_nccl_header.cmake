# The configure-time NCCL rule (cmake/NepaNccl.cmake) on made-up headers: the same minor release passes, another
# minor release and a file that is not an NCCL header fail configure with one message naming both versions.
# usage: cmake -DSRC=<repo> -DWORK=<scratch dir> -P check_nccl_header.cmake
function(header name major minor patch)
  file(MAKE_DIRECTORY ${WORK}/${name})
  file(WRITE ${WORK}/${name}/nccl.h "#ifndef NCCL_H_\n#define NCCL_H_\n#define NCCL_MAJOR ${major}\n"
             "#define NCCL_MINOR ${minor}\n#define NCCL_PATCH ${patch}\n#define NCCL_SUFFIX \"\"\n#endif\n")
endfunction()

function(expect name torch_version want_rc want_text)
  execute_process(COMMAND ${CMAKE_COMMAND} -DNCCL_INCLUDE_DIR=${WORK}/${name} -DTORCH_NCCL_VERSION=${torch_version}
                          -P ${SRC}/cmake/NepaNccl.cmake
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REGEX REPLACE "[ \n]+" " " text "${out}${err}")  # CMake wraps long messages
  if((want_rc EQUAL 0 AND NOT rc EQUAL 0) OR (NOT want_rc EQUAL 0 AND rc EQUAL 0))
    message(FATAL_ERROR "${name} against LibTorch's ${torch_version}: exit ${rc}, expected ${want_rc}: ${text}")
  endif()
  string(FIND "${text}" "${want_text}" pos)
  if(pos EQUAL -1)
    message(FATAL_ERROR "${name} against LibTorch's ${torch_version}: expected '${want_text}' in: ${text}")
  endif()
  message(STATUS "${name} against ${torch_version}: exit ${rc}, '${want_text}'")
endfunction()

file(REMOVE_RECURSE ${WORK})
header(same 2 28 9)
header(patch 2 28 3)
header(minor 2 27 5)
file(MAKE_DIRECTORY ${WORK}/junk)
file(WRITE ${WORK}/junk/nccl.h "/* not NCCL */\n")
expect(same 2.28.9 0 "nccl.h matches NCCL 2.28.9")
expect(patch 2.28.9 0 "is NCCL 2.28.3, LibTorch was built with 2.28.9 (same minor release)")
expect(minor 2.28.9 1 "is NCCL 2.27.5, but LibTorch was built with NCCL 2.28.9; compiling against it would corrupt")
expect(junk 2.28.9 1 "defines no NCCL_MAJOR/MINOR/PATCH")
