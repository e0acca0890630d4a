// Process-wide runtime facts: ops, threads, ISA.
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "convert.h"
#include "ember/op.h"
#include "ember/thread_pool.h"
#include "runtime/registry.h"

namespace ember::py {

void init_runtime(nb::module_& m) {
  m.def(
      "op_names",
      [](bool fused) {
        std::vector<std::string> names;
        for (int i = 0; i < (int)OpType::Count; i++) {
          if (!op_has_def((OpType)i)) continue;
          if (fused || !(op_def((OpType)i).flags & kOpFused)) names.push_back(op_name((OpType)i));
        }
        return names;
      },
      nb::arg("fused") = false,
      "ember's ops; fused=True adds the ones only graph passes make (FusedMatMul, ...)");
  m.def("thread_pool_size", &thread_pool_size);
  m.def("cpu_isa", [] { return std::string(isa_name(cpu_isa())); });
}

}  // namespace ember::py
