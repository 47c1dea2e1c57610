# Shared helpers for x2sec targets.

function(x2sec_set_warnings)
  add_compile_options(-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
                      -Wunused -Woverloaded-virtual -Wformat=2)
  if(X2SEC_WERROR)
    add_compile_options(-Werror)
  endif()
  if(X2SEC_SANITIZE)
    add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer)
    add_link_options(-fsanitize=address,undefined)
  endif()
  # libFuzzer builds: every library carries the coverage instrumentation (else the fuzzer sees
  # only its target file and explores blind) and ASan+UBSan, so a bug deep in the engine is
  # caught where it happens.
  if(X2SEC_FUZZ AND CMAKE_CXX_COMPILER_ID MATCHES "Clang" AND NOT X2SEC_SANITIZE)
    add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
    add_link_options(-fsanitize=address,undefined)
  endif()
endfunction()

# x2sec_add_library(name SOURCES ... DEPS ...): a static library x2sec_<name> with the
# public include directory include/ (headers live in include/x2sec/<name>/).
function(x2sec_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(x2sec_${name} STATIC ${ARG_SOURCES})
  add_library(x2sec::${name} ALIAS x2sec_${name})
  target_include_directories(x2sec_${name} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
  target_link_libraries(x2sec_${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  set_target_properties(x2sec_${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()

# x2sec_add_test(name SOURCES ... DEPS ... [LABELS ...] [TIMEOUT s] [SERIAL]): a GoogleTest
# executable whose tests are registered with ctest one by one.  SERIAL marks every discovered
# test RUN_SERIAL (namespace/TUN/charon tests whose timing suffers under `ctest -j`).
function(x2sec_add_test name)
  cmake_parse_arguments(ARG "SERIAL" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set(_serial FALSE)
  if(ARG_SERIAL)
    set(_serial TRUE)
  endif()
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60
                       PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}" RUN_SERIAL ${_serial})
endfunction()

# x2sec_add_fuzzer(name SOURCE file DEPS ... CORPUS dir): with X2SEC_FUZZ and clang, a
# libFuzzer binary <name>; always, a regression runner <name>_corpus registered with ctest
# that feeds every file of the corpus directory through LLVMFuzzerTestOneInput.
function(x2sec_add_fuzzer name)
  cmake_parse_arguments(ARG "" "SOURCE;CORPUS" "DEPS" ${ARGN})
  add_executable(${name}_corpus ${ARG_SOURCE} ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus_main.cpp)
  target_link_libraries(${name}_corpus PRIVATE ${ARG_DEPS})
  add_test(NAME fuzz_corpus.${name} COMMAND ${name}_corpus ${ARG_CORPUS})
  set_tests_properties(fuzz_corpus.${name} PROPERTIES TIMEOUT 300 LABELS fuzz)
  if(X2SEC_FUZZ AND CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    add_executable(${name} ${ARG_SOURCE})
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  endif()
endfunction()
