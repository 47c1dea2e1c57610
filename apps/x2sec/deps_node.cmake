target_link_libraries(x2sec PRIVATE x2sec::node)
