// ember._core: thin bindings only; each area has its own bind_*.cpp.
#include <nanobind/nanobind.h>

#include "errors.h"

namespace nb = nanobind;

namespace ember::py {
void init_graph(nb::module_& m);
void init_session(nb::module_& m);
void init_runtime(nb::module_& m);
void init_llm(nb::module_& m);
void init_device(nb::module_& m);
}  // namespace ember::py

NB_MODULE(_core, m) {
  m.doc() = "ember's C++ runtime";
  ember::py::register_error_translator();
  ember::py::init_graph(m);
  ember::py::init_session(m);
  ember::py::init_runtime(m);
  ember::py::init_llm(m);
  ember::py::init_device(m);
}
