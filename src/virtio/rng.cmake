target_sources(libvmm PRIVATE ${CMAKE_CURRENT_LIST_DIR}/rng.cpp ${CMAKE_CURRENT_LIST_DIR}/rng_kind.cpp)
