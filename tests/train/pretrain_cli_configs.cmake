execute_process(COMMAND ${EXE} --config ${SRC}/configs/pretrain/vitb.yaml --dry-run
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "--dry-run failed (${rc}): ${err}")
endif()
string(FIND "${out}" "# model: 85527552 parameters" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "vitb.yaml --dry-run does not report 85527552 parameters:\n${out}")
endif()
string(FIND "${out}" "# accumulation: 16 micro-batches of 256" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "vitb.yaml --dry-run does not report the accumulation:\n${out}")
endif()

execute_process(COMMAND ${EXE} --config ${SRC}/configs/pretrain/vitl.yaml --dry-run
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(FIND "${out}" "# model: 302967808 parameters" pos)
if(NOT rc EQUAL 0 OR pos EQUAL -1)
  message(FATAL_ERROR "vitl.yaml --dry-run (${rc}) does not report 302967808 parameters:\n${out}${err}")
endif()

execute_process(COMMAND ${EXE} --config ${SRC}/configs/pretrain/vitb.yaml --output-dir ${CMAKE_CURRENT_BINARY_DIR}/unused
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(expected "config error: ${SRC}/configs/pretrain/vitb.yaml: data.root: required for dataset image_folder")
string(FIND "${err}" "${expected}" pos)
string(REGEX MATCHALL "\n" lines "${err}")
list(LENGTH lines nlines)
if(NOT rc EQUAL 2 OR pos EQUAL -1 OR NOT nlines EQUAL 1)
  message(FATAL_ERROR "expected exit 2 and one line '${expected}...', got ${rc}: ${err}")
endif()

# The release's recipe as the dry runs state it (NEPA-SPEC §3-4): clipping at 1.0 and an EMA at 0.9999 in both
# apps, 1600 epochs for L pretraining, and the two evaluation views (B: shorter side 256; L: square 235).
function(expect_lines exe config)
  execute_process(COMMAND ${exe} --config ${SRC}/${config} --dry-run RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${config} --dry-run failed (${rc}): ${err}")
  endif()
  foreach(line IN LISTS ARGN)
    string(FIND "${out}" "${line}" pos)
    if(pos EQUAL -1)
      message(FATAL_ERROR "${config} --dry-run does not say '${line}':\n${out}")
    endif()
  endforeach()
endfunction()
set(clip "# gradient clipping: global L2 norm <= 1 per optimizer step, after the data-parallel average")
set(ema "# EMA of the weights: decay 0.9999 per optimizer step")
expect_lines(${EXE} configs/pretrain/vitb.yaml "${clip}" "${ema}")
expect_lines(${EXE} configs/pretrain/vitl.yaml "${clip}" "${ema}" "  epochs: 1600")
expect_lines(${FT_EXE} configs/finetune/vitb.yaml "${clip}" "${ema}" "head init zeros"
             "# eval view: resize the shorter side to 256 (bicubic, antialiased; eval_crop_pct 0.875"
             "  drop_path_prob: 0.1" "llrd 0.65, fixed")
expect_lines(${FT_EXE} configs/finetune/vitl.yaml "${clip}" "${ema}" "head init zeros"
             "# eval view: resize to 235x235 (bicubic, antialiased; eval_crop_pct 0.95, eval_resize square)"
             "  drop_path_prob: 0.2" "llrd 0.75, fixed")
expect_lines(${FT_EXE} configs/finetune/vitb_llrd_ramp.yaml "llrd 0.35 -> 1 along a half-cosine")
