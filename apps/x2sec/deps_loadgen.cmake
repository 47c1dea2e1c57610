# `x2sec ike load`: the IKE load generator (src/loadgen).
if(TARGET x2sec_loadgen)
  target_link_libraries(x2sec PRIVATE x2sec::loadgen)
  target_compile_definitions(x2sec PRIVATE X2SEC_HAVE_LOADGEN=1)
endif()
