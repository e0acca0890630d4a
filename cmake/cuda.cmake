# EMBER_CUDA=AUTO builds ember._cuda only where nvcc and a GPU driver are both present, so a
# plain install on a GPU-less machine is CPU-only; ON builds it wherever nvcc is (CI compiles
# it that way, .ci/cuda.sh).
set(EMBER_CUDA_ENABLED OFF)
if(EMBER_CUDA STREQUAL "AUTO")
  find_program(EMBER_NVCC nvcc PATHS /usr/local/cuda/bin)
  find_library(EMBER_LIBCUDA cuda PATHS /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/cuda/lib64/stubs NO_DEFAULT_PATH)
  if(EMBER_NVCC AND EMBER_LIBCUDA AND EXISTS "/proc/driver/nvidia/version")
    set(EMBER_CUDA_ENABLED ON)
  endif()
elseif(EMBER_CUDA)
  set(EMBER_CUDA_ENABLED ON)
endif()
if(EMBER_CUDA_ENABLED)
  add_subdirectory(cuda)
endif()
message(STATUS "ember: CUDA module ${EMBER_CUDA_ENABLED} (EMBER_CUDA=${EMBER_CUDA})")
