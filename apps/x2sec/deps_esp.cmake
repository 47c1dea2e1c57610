target_link_libraries(x2sec PRIVATE x2sec::esp x2sec::esp_natt)
