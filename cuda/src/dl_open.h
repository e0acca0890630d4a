// Opening a shared library at run time, first of several candidate paths (cuBLASLt, cuDNN).
#pragma once
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

namespace ember::cuda {

// dlopens each of `candidates` in turn and returns the first handle that `accept` takes
// (accept returns "" for yes, else why not; a refused library is closed), with its path in
// `path`. nullptr when none: `tried` then lists every path and its reason, one per line.
void* dl_open_first(const std::vector<std::string>& candidates,
                    const std::function<std::string(void* lib)>& accept, std::string* path,
                    std::string* tried);

// A symbol and where its address goes.
struct DlSym {
  const char* name;
  void** slot;
};
// Looks every symbol up in `lib` into its slot; the first missing one's name, or nullptr.
const char* dl_resolve(void* lib, std::initializer_list<DlSym> syms);

}  // namespace ember::cuda
