# Cross-compile for 64-bit ARM Linux with Debian's g++-aarch64-linux-gnu. Only the C++ core and
# ember_tests: configure with -DEMBER_BUILD_PYTHON=OFF -DEMBER_CUDA=OFF. .ci/arm.sh builds them
# and runs ember_tests under qemu-aarch64 -L /usr/aarch64-linux-gnu.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
# -Wno-psabi: g++ notes that passing std::pair<double, double> changed in GCC 10.1; every object
# here comes from one compiler, so the note is noise.
set(CMAKE_CXX_FLAGS_INIT "-Wno-psabi")

# Headers and libraries from the target sysroot only; programs (ccache, ninja) from the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
