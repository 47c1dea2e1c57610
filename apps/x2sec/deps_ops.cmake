# /metrics for every daemon (apps/x2sec/daemon_metrics.cpp on net::MetricsServer).
target_sources(x2sec PRIVATE ${CMAKE_CURRENT_LIST_DIR}/daemon_metrics.cpp)
target_link_libraries(x2sec PRIVATE x2sec::net)
target_compile_definitions(x2sec PRIVATE X2SEC_VERSION="${PROJECT_VERSION}")
