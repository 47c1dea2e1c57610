# `x2sec ike ...`: the IKE daemon (runtime + engine + config) and its control-socket clients.
target_link_libraries(x2sec PRIVATE x2sec::runtime x2sec::config)
# `ike run` and `ike check-config` need the engine and the crypto/x509 libraries behind the
# config loader; until those are implemented on main they report that instead of linking.
set(X2SEC_IKE_HAVE_CONFIG FALSE)
if(EXISTS ${PROJECT_SOURCE_DIR}/src/crypto/CMakeLists.txt AND EXISTS ${PROJECT_SOURCE_DIR}/src/x509/CMakeLists.txt)
  set(X2SEC_IKE_HAVE_CONFIG TRUE)
  target_compile_definitions(x2sec PRIVATE X2SEC_IKE_HAVE_CONFIG=1)
endif()
file(GLOB_RECURSE X2SEC_IKEV2_IMPL_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/ikev2/src/*.cpp)
foreach(f IN LISTS X2SEC_IKEV2_IMPL_SOURCES)
  file(READ ${f} X2SEC_IKEV2_IMPL_TEXT)
  string(FIND "${X2SEC_IKEV2_IMPL_TEXT}" "Engine::Engine(" X2SEC_IKEV2_CTOR_POS)
  if(X2SEC_IKE_HAVE_CONFIG AND X2SEC_IKEV2_CTOR_POS GREATER -1)
    target_compile_definitions(x2sec PRIVATE X2SEC_IKE_HAVE_ENGINE=1)
  endif()
endforeach()
# With the ESP library, `ike run --dataplane tun` carries the Child SAs in user space.
if(EXISTS ${PROJECT_SOURCE_DIR}/src/esp/include/x2sec/esp/natt_transport.hpp)
  target_compile_definitions(x2sec PRIVATE X2SEC_IKE_HAVE_ESP=1)
  target_link_libraries(x2sec PRIVATE x2sec::esp_natt)
endif()
