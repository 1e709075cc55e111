# Read by llama.cpp's project() while llama-cpp-python builds (scripts/setup.sh passes it as
# CMAKE_PROJECT_llama.cpp_INCLUDE). llama-cpp-python forces LLAMA_BUILD_COMMON on, yet its
# Python package loads only libllama and ggml: llama.cpp's common library and the HTTP
# client it brings are built, installed and never loaded. A normal variable set here, in
# llama.cpp's directory scope, wins over that cache entry.
set(LLAMA_BUILD_COMMON OFF)
