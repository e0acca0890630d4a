// Session: run with the GIL released; feeds are borrowed, outputs owned by numpy.
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include "convert.h"
#include "ember/session.h"

namespace ember::py {

namespace {

// feeds: list of (name, array, dtype_override). Arrays in the session's device memory (CUDA
// DLPack tensors on its GPU, or memory its device allocated) are marked in `on_device`.
NamedTensors feeds_from_python(const Session& s, const nb::list& feeds, std::vector<uint8_t>* on_device) {
  NamedTensors out;
  const std::string device = s.device_name();
  for (nb::handle item : feeds) {
    auto [name, arr, dtype] = nb::cast<std::tuple<std::string, Array, std::string>>(item);
    std::string what = "input '" + name + "'";
    bool cuda = arr.device_type() == nb::device::cuda::value;
    if (cuda) {
      std::string want = "cuda:" + std::to_string(arr.device_id());
      EMBER_CHECK(device == want, Input, "[run] ", what, " is on ", want, "; this engine runs on ", device);
    }
    out.emplace_back(name, tensor_from_array(arr, dtype, what, cuda));
    if (on_device) on_device->push_back(cuda || s.device_owns(arr.data()));
  }
  return out;
}

NamedTensors feeds_from_python(const nb::list& feeds) {
  NamedTensors out;
  for (nb::handle item : feeds) {
    auto [name, arr, dtype] = nb::cast<std::tuple<std::string, Array, std::string>>(item);
    out.emplace_back(name, tensor_from_array(arr, dtype, "input '" + name + "'"));
  }
  return out;
}

// DLPack device of the session's device memory: CUDA for "cuda:N", else host (fake devices).
std::pair<int, int> dlpack_device(const Session& s) {
  const std::string name = s.device_name();
  if (name.rfind("cuda:", 0) == 0) return {nb::device::cuda::value, std::stoi(name.substr(5))};
  return {nb::device::cpu::value, 0};
}

}  // namespace

void init_session(nb::module_& m) {
  nb::class_<Session>(m, "Session")
      .def(
          "__init__",
          [](Session* self, Graph& graph, int threads, size_t memory_limit, bool reference_kernels,
             int plan_cache_size, const std::string& device, const std::string& precision,
             bool deterministic) {
            SessionOptions o;
            o.threads = threads;
            o.memory_limit = memory_limit;
            o.reference_kernels = reference_kernels;
            o.plan_cache_size = plan_cache_size;
            o.device = device;
            EMBER_CHECK(precision == "fp32" || precision == "fp16" || precision == "bf16", Input,
                        "[session] precision must be 'fp32', 'fp16' or 'bf16', got '", precision, "'");
            o.device_options.precision = precision == "fp16"   ? Precision::F16
                                         : precision == "bf16" ? Precision::BF16
                                                               : Precision::F32;
            o.device_options.deterministic = deterministic;
            Graph g = std::move(graph);
            nb::gil_scoped_release release;
            new (self) Session(std::move(g), o);
          },
          nb::arg("graph"), nb::arg("threads") = 0, nb::arg("memory_limit") = 0,
          nb::arg("reference_kernels") = false, nb::arg("plan_cache_size") = 8,
          nb::arg("device") = "cpu", nb::arg("precision") = "fp32", nb::arg("deterministic") = false)
      .def(
          "run",
          [](Session& s, const nb::list& feeds, const std::vector<std::string>& outputs,
             bool outputs_on_device) {
            RunOptions options;
            options.outputs_on_device = outputs_on_device;
            NamedTensors in = feeds_from_python(s, feeds, &options.feed_on_device);
            NamedTensors out;
            {
              nb::gil_scoped_release release;
              out = s.run(in, outputs, nullptr, options);
            }
            auto [device_type, device_id] = dlpack_device(s);
            nb::list result;
            for (auto& [name, t] : out) {
              nb::object arr = outputs_on_device ? device_array_from_tensor(t, device_type, device_id)
                                                 : array_from_tensor(t);
              result.append(nb::make_tuple(name, arr, dtype_name(t.dtype())));
            }
            return result;
          },
          nb::arg("feeds"), nb::arg("outputs") = std::vector<std::string>{},
          nb::arg("outputs_on_device") = false)
      .def(
          "device_zeros",
          // A zeroed array in the session's device memory (DLPack), e.g. KV caches to bind there.
          [](Session& s, const std::string& dtype, const std::vector<int64_t>& shape) {
            DType dt;
            EMBER_CHECK(dtype_from_name(dtype, &dt), Input, "[session] unknown dtype '", dtype, "'");
            Tensor t = s.device_zeros(dt, Shape(shape.begin(), shape.end()));
            auto [device_type, device_id] = dlpack_device(s);
            return device_array_from_tensor(t, device_type, device_id);
          },
          nb::arg("dtype"), nb::arg("shape"))
      .def(
          "run_profiled",
          // -> (outputs as run returns them, [(name, op, kernel, isa, start_ns, end_ns, flops,
          // bytes)] per node run, total_ns of the run)
          [](Session& s, const nb::list& feeds, const std::vector<std::string>& outputs) {
            RunOptions options;  // device feeds as run takes them; outputs to the host
            NamedTensors in = feeds_from_python(s, feeds, &options.feed_on_device);
            NamedTensors out;
            RunTiming timing;
            {
              nb::gil_scoped_release release;
              out = s.run(in, outputs, &timing, options);
            }
            nb::list result, events;
            for (auto& [name, t] : out)
              result.append(nb::make_tuple(name, array_from_tensor(t), dtype_name(t.dtype())));
            for (const NodeTiming& n : timing.nodes)
              events.append(nb::make_tuple(n.name, n.op, n.kernel, n.isa, n.start_ns, n.end_ns,
                                           n.flops, n.bytes));
            return nb::make_tuple(result, events, timing.total_ns);
          },
          nb::arg("feeds"), nb::arg("outputs") = std::vector<std::string>{})
      .def("plan_info",
           [](Session& s, const nb::list& feeds) {
             NamedTensors in = feeds_from_python(feeds);
             PlanInfo info;
             {
               nb::gil_scoped_release release;
               info = s.plan_info(in);
             }
             nb::dict d;
             d["arena_bytes"] = info.arena_bytes;
             d["output_bytes"] = info.output_bytes;
             d["folded_bytes"] = info.folded_bytes;
             d["device_arena_bytes"] = info.device_arena_bytes;
             nb::list nodes;
             for (const auto& n : info.nodes)
               nodes.append(nb::make_tuple(n.name, n.op, n.kernel, n.isa, n.device));
             d["nodes"] = nodes;
             return d;
           })
      .def_prop_ro("plans_cached", &Session::plans_cached)
      .def_prop_ro("num_nodes", [](const Session& s) { return s.graph().nodes.size(); })
      .def_prop_ro("constant_bytes", [](const Session& s) { return s.graph().constant_bytes(); })
      .def("node_ops", [](const Session& s) {
        std::vector<std::string> ops;
        for (const Node& n : s.graph().nodes) ops.push_back(op_name(n.op));
        return ops;
      })
      .def("quant_fallbacks", &Session::quant_fallbacks)
      .def("device_fallbacks", &Session::device_fallbacks)
      .def("nodes", [](const Session& s) {
        nb::list out;  // (name, op) of every node after the load-time passes
        for (const Node& n : s.graph().nodes) out.append(nb::make_tuple(n.name, op_name(n.op)));
        return out;
      });
}

}  // namespace ember::py
