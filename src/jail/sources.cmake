# The jail (vmm --jail): planning which host files a system needs, and running it in namespaces
# as an unprivileged user (docs/SECURITY.md, "Sandbox: the jail").
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/plan.cpp
  ${CMAKE_CURRENT_LIST_DIR}/jail.cpp)
