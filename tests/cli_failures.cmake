# Command lines that are not what was meant end with one line and a non-zero code, never a run of something
# else: an unknown flag (2, not CLI11's 109), a config that is a directory or sets nothing (2, instead of
# training the defaults), a model folder without its weights (1, instead of running a random backbone).
# usage: cmake -DPRETRAIN=... -DFINETUNE=... -DTOOL=... -DSRC=<repo> -DWORK=<scratch> -P cli_failures.cmake
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/configs ${WORK}/model)
file(WRITE ${WORK}/empty.yaml "# nothing set here\n")
file(WRITE ${WORK}/model/config.json "{}\n")

# Runs the command; requires exit code `want_rc` and exactly one line on stderr containing `want`.
function(expect want_rc want)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REGEX MATCHALL "\n" lines "${err}")
  list(LENGTH lines nlines)
  string(FIND "${err}" "${want}" pos)
  if(NOT rc EQUAL want_rc OR pos EQUAL -1 OR NOT nlines EQUAL 1)
    message(FATAL_ERROR "${ARGN}\nexpected exit ${want_rc} and one stderr line containing '${want}'; got exit "
                        "${rc}, stderr:\n${err}stdout:\n${out}")
  endif()
  message(STATUS "exit ${rc}: ${err}")
endfunction()

set(cfg ${SRC}/configs/pretrain/fmnist_tiny.yaml)
expect(2 "nepa_pretrain: The following argument was not expected: --nosuch (see --help)"
       ${PRETRAIN} --config ${cfg} --nosuch)
expect(2 "nepa_finetune: The following argument was not expected: --bogus"
       ${FINETUNE} --config ${SRC}/configs/finetune/fmnist_tiny.yaml --bogus)
expect(2 "nepa_tool: The following argument was not expected: --nosuch" ${TOOL} config --config ${cfg} --nosuch)
expect(2 "nepa_pretrain: --config is required" ${PRETRAIN})
expect(2 "config error: ${WORK}/configs: not a regular file (a directory); a config is one YAML file"
       ${PRETRAIN} --config ${WORK}/configs)
expect(2 "config error: ${WORK}/empty.yaml: the file sets nothing (empty or only comments)"
       ${FINETUNE} --config ${WORK}/empty.yaml)
expect(1 "${WORK}/model/model.safetensors: no such weights file in the model folder ${WORK}/model"
       ${TOOL} forward --model ${WORK}/model --input ${WORK}/x.safetensors --output ${WORK}/y.safetensors)
