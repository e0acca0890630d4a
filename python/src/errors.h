// ember::Error -> the matching ember.errors class, for every nanobind module ember builds
// (ember._core, ember._cuda): one translator, registered by each module at import.
#pragma once
#include <nanobind/nanobind.h>

#include <new>

#include "ember/error.h"

namespace ember::py {

// Python classes from ember.errors, looked up once and kept for the process lifetime.
inline PyObject* error_class(ErrorKind kind) {
  static PyObject* classes[4] = {};
  int k = (int)kind;
  if (!classes[k]) {
    static const char* names[] = {"ModelError", "InputError", "UnsupportedOpError", "InternalError"};
    nanobind::object errors = nanobind::module_::import_("ember.errors");
    classes[k] = errors.attr(names[k]).inc_ref().ptr();
  }
  return classes[k];
}

inline void register_error_translator() {
  nanobind::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      PyErr_SetString(error_class(e.kind()), e.what());
    } catch (const std::bad_alloc&) {
      PyErr_SetString(error_class(ErrorKind::Input), "[run] out of memory");
    }
  });
}

}  // namespace ember::py
