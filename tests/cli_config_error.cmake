# A bad --set stops nepa_tool with exit code 2 and exactly one line naming the key and its source.
execute_process(COMMAND ${TOOL} config --config ${SRC}/configs/pretrain/fmnist_tiny.yaml
                        --set model.num_attention_heads=64
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 2)
  message(FATAL_ERROR "expected exit code 2, got ${rc}: ${err}")
endif()
set(expected "config error: --set model.num_attention_heads=64: model.num_attention_heads: 2-D RoPE needs head_dim divisible by 4")
string(FIND "${err}" "${expected}" pos)
string(REGEX MATCHALL "\n" lines "${err}")
list(LENGTH lines nlines)
if(pos EQUAL -1 OR NOT nlines EQUAL 1)
  message(FATAL_ERROR "expected one line containing '${expected}', got: ${err}")
endif()
