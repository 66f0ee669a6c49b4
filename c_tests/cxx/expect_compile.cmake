# cmake -DCXX=... -DINCLUDE=... -DSOURCE=... -DCASE=... -DEXPECT=fail|pass [-DTYPE=regex] -P
# Compiles SOURCE with -DCASE_<CASE> (syntax only). EXPECT=fail: the compiler must refuse
# it with a message containing "trivially copyable" and matching TYPE (the offending
# type). EXPECT=pass: it must compile.
foreach(std 17 20)
    execute_process(
        COMMAND "${CXX}" -std=c++${std} -Wall -Wextra -Wpedantic "-I${INCLUDE}" "-DCASE_${CASE}"
                -fsyntax-only "${SOURCE}"
        RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
    set(all "${out}${err}")
    if(EXPECT STREQUAL "pass")
        if(NOT rc EQUAL 0)
            message(FATAL_ERROR "case ${CASE} (c++${std}) should compile but did not:\n${all}")
        endif()
        continue()
    endif()
    if(rc EQUAL 0)
        message(FATAL_ERROR "case ${CASE} (c++${std}) compiled, but a process pool must refuse it")
    endif()
    if(NOT all MATCHES "static assertion failed|static_assert failed|static assertion")
        message(FATAL_ERROR "case ${CASE} (c++${std}): refused, but not by a static_assert:\n${all}")
    endif()
    if(NOT all MATCHES "trivially copyable")
        message(FATAL_ERROR "case ${CASE} (c++${std}): the message lacks \"trivially copyable\":\n${all}")
    endif()
    if(DEFINED TYPE AND NOT all MATCHES "${TYPE}")
        message(FATAL_ERROR "case ${CASE} (c++${std}): the message does not name the type (${TYPE}):\n${all}")
    endif()
    string(REGEX MATCH "[^\n]*static assert[^\n]*" first "${all}")
    message(STATUS "case ${CASE} (c++${std}) refused as expected: ${first}")
endforeach()
