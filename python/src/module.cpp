// ember._core: thin bindings only; each area has its own bind_*.cpp.
#include <nanobind/nanobind.h>

#include "ember/error.h"

namespace nb = nanobind;

namespace ember::py {
void init_graph(nb::module_& m);
void init_session(nb::module_& m);
void init_runtime(nb::module_& m);
void init_llm(nb::module_& m);
void init_device(nb::module_& m);
}  // namespace ember::py

namespace {

// Python classes from ember.errors, looked up once and kept for the process lifetime.
PyObject* error_class(ember::ErrorKind kind) {
  static PyObject* classes[4] = {};
  int k = (int)kind;
  if (!classes[k]) {
    static const char* names[] = {"ModelError", "InputError", "UnsupportedOpError", "InternalError"};
    nb::object errors = nb::module_::import_("ember.errors");
    classes[k] = errors.attr(names[k]).inc_ref().ptr();
  }
  return classes[k];
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "ember's C++ runtime";
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const ember::Error& e) {
      PyErr_SetString(error_class(e.kind()), e.what());
    } catch (const std::bad_alloc&) {
      PyErr_SetString(error_class(ember::ErrorKind::Input), "[run] out of memory");
    }
  });
  ember::py::init_graph(m);
  ember::py::init_session(m);
  ember::py::init_runtime(m);
  ember::py::init_llm(m);
  ember::py::init_device(m);
}
