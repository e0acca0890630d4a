// LlmRunner: the C++ step loop of ember's LLM path (cpp/src/llm/runner.h). Steps, polls and
// the loop thread run with the GIL released.
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "convert.h"
#include "llm/runner.h"

namespace ember::py {

namespace {

using llm::LlmRunner;
using llm::SeqOutput;

llm::SamplingParams params_from(const nb::dict& d) {
  llm::SamplingParams p;
  for (auto [k, v] : d) {
    std::string key = nb::cast<std::string>(k);
    if (key == "temperature") p.temperature = nb::cast<float>(v);
    else if (key == "top_k") p.top_k = nb::cast<int32_t>(v);
    else if (key == "top_p") p.top_p = nb::cast<float>(v);
    else if (key == "min_p") p.min_p = nb::cast<float>(v);
    else if (key == "repetition_penalty") p.repetition_penalty = nb::cast<float>(v);
    else if (key == "presence_penalty") p.presence_penalty = nb::cast<float>(v);
    else if (key == "frequency_penalty") p.frequency_penalty = nb::cast<float>(v);
    else if (key == "seed") {
      if (!v.is_none()) {
        p.seed = nb::cast<uint64_t>(v);
        p.has_seed = true;
      }
    } else if (key == "max_tokens") p.max_tokens = nb::cast<int32_t>(v);
    else if (key == "stop_token_ids") p.stop_token_ids = nb::cast<std::vector<int32_t>>(v);
    else if (key == "logprobs") p.logprobs = nb::cast<int32_t>(v);
    else fail(ErrorKind::Input, "[sampling] unknown parameter '", key, "'");
  }
  return p;
}

// (id, token, logprob, [(token, logprob)], finished, finish_reason, queued_s) per output.
nb::list outputs_to_python(const std::vector<SeqOutput>& outs) {
  nb::list l;
  for (const SeqOutput& o : outs)
    l.append(nb::make_tuple(o.id, o.token, o.logprob, o.top, o.finished, o.finish_reason,
                            o.queued_s));
  return l;
}

}  // namespace

void init_llm(nb::module_& m) {
  nb::class_<LlmRunner>(m, "LlmRunner")
      .def(
          "__init__",
          [](LlmRunner* self, Session* session, int32_t layers, int32_t kv_heads, int32_t head_dim,
             int32_t vocab, const std::string& kv_dtype, int32_t block_size, int32_t num_blocks,
             int32_t max_num_seqs, int32_t max_num_batched_tokens, int32_t max_model_len,
             bool prefix_caching) {
            llm::RunnerConfig c;
            c.num_layers = layers;
            c.num_kv_heads = kv_heads;
            c.head_dim = head_dim;
            c.vocab_size = vocab;
            EMBER_CHECK(kv_dtype == "f16" || kv_dtype == "f32", Input,
                        "[llm] kv_dtype must be 'f16' or 'f32', not '", kv_dtype, "'");
            c.kv_dtype = kv_dtype == "f16" ? DType::F16 : DType::F32;
            c.scheduler.block_size = block_size;
            c.scheduler.num_blocks = num_blocks;
            c.scheduler.max_num_seqs = max_num_seqs;
            c.scheduler.max_num_batched_tokens = max_num_batched_tokens;
            c.scheduler.max_model_len = max_model_len;
            c.scheduler.enable_prefix_caching = prefix_caching;
            new (self) LlmRunner(session, c);
          },
          nb::keep_alive<1, 2>(), nb::arg("session"), nb::arg("layers"), nb::arg("kv_heads"),
          nb::arg("head_dim"), nb::arg("vocab"), nb::arg("kv_dtype"), nb::arg("block_size"),
          nb::arg("num_blocks"), nb::arg("max_num_seqs"), nb::arg("max_num_batched_tokens"),
          nb::arg("max_model_len"), nb::arg("prefix_caching"))
      .def(
          "add_request",
          [](LlmRunner& r, int64_t id, std::vector<int32_t> prompt, const nb::dict& params) {
            r.add_request(id, std::move(prompt), params_from(params));
          },
          nb::arg("id"), nb::arg("prompt"), nb::arg("params"))
      .def("cancel", &LlmRunner::cancel, nb::arg("ids"))
      .def("step",
           [](LlmRunner& r) {
             std::vector<SeqOutput> out;
             {
               nb::gil_scoped_release release;
               out = r.step();
             }
             return outputs_to_python(out);
           })
      .def("poll",
           [](LlmRunner& r, int64_t timeout_ms) {
             std::vector<SeqOutput> out;
             {
               nb::gil_scoped_release release;
               out = r.poll(timeout_ms);
             }
             return outputs_to_python(out);
           },
           nb::arg("timeout_ms") = 0)
      .def("start", &LlmRunner::start)
      .def("kv_on_device", &LlmRunner::kv_on_device)
      .def("stop", [](LlmRunner& r) {
        nb::gil_scoped_release release;
        r.stop();
      })
      .def("has_unfinished", [](LlmRunner& r) {
        nb::gil_scoped_release release;
        return r.has_unfinished();
      })
      .def("stats", [](LlmRunner& r) {
        llm::RunnerStats s;
        {
          nb::gil_scoped_release release;
          s = r.stats();
        }
        nb::dict d;
        d["steps"] = s.steps;
        d["prompt_tokens"] = s.prompt_tokens;
        d["generated_tokens"] = s.generated_tokens;
        d["preemptions"] = s.preemptions;
        d["prefix_query_tokens"] = s.prefix_query_tokens;
        d["prefix_hit_tokens"] = s.prefix_hit_tokens;
        d["running"] = s.running;
        d["waiting"] = s.waiting;
        d["num_blocks"] = s.num_blocks;
        d["free_blocks"] = s.free_blocks;
        d["kv_usage"] = s.kv_usage;
        return d;
      });
}

}  // namespace ember::py
