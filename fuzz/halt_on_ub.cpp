// Linked into every fuzzer: UBSan reports undefined behaviour in libvmm (built with recoverable
// checks, see CMakeLists.txt) and then stops, so that libFuzzer keeps the input that caused it.
extern "C" const char* __ubsan_default_options() {
  return "halt_on_error=1:print_stacktrace=1";
}
