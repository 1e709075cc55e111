# Read by llama.cpp's project() while llama-cpp-python builds (scripts/setup.sh passes it as
# CMAKE_PROJECT_llama.cpp_INCLUDE). llama-cpp-python forces LLAMA_BUILD_COMMON on, yet its
# Python package loads only libllama and ggml: llama.cpp's common library and the HTTP
# client it brings are a third of the build that nothing loads. A normal variable set here,
# inside llama.cpp's directory, wins over that cache entry.
set(LLAMA_BUILD_COMMON OFF)
