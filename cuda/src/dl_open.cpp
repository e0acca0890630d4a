#include "cuda/src/dl_open.h"

#include <dlfcn.h>

#include "ember/error.h"

namespace ember::cuda {

void* dl_open_first(const std::vector<std::string>& candidates,
                    const std::function<std::string(void* lib)>& accept, std::string* path,
                    std::string* tried) {
  for (const std::string& p : candidates) {
    void* lib = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL);
    std::string why;
    if (!lib) {
      const char* e = dlerror();
      why = e ? e : "dlopen failed";
    } else {
      why = accept(lib);
      if (why.empty()) {
        *path = p;
        return lib;
      }
      dlclose(lib);
    }
    *tried += str_cat("\n  ", p, ": ", why);
  }
  return nullptr;
}

const char* dl_resolve(void* lib, std::initializer_list<DlSym> syms) {
  for (const DlSym& s : syms) {
    *s.slot = dlsym(lib, s.name);
    if (!*s.slot) return s.name;
  }
  return nullptr;
}

}  // namespace ember::cuda
