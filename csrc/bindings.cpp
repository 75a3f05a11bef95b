// The only file that knows about Python: converts arguments, releases the GIL, calls the C++ core.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "batch.hpp"
#include "build_info.hpp"
#include "countdown.hpp"
#include "function_calls.hpp"
#include "verdict.hpp"

namespace py = pybind11;

namespace {

using r3fast::Verdict;

// Single checks hand the GIL back only when the input is big enough for that to pay off.
constexpr size_t kReleaseGilBytes = size_t{1} << 16;

std::string type_name(PyObject* obj) { return Py_TYPE(obj)->tp_name; }

// An argument's name for error messages, e.g. responses[3]; formatted only when an error is raised.
struct ArgName {
  const char* base;
  Py_ssize_t index = -1;  // -1: not an element of a batch

  std::string str() const { return index < 0 ? base : std::string(base) + "[" + std::to_string(index) + "]"; }
};

// The UTF-8 bytes of a str or bytes argument, borrowed from the object. `valid` is false for a str that has
// no UTF-8 form (lone surrogates): that is a failed check, not an error. A str's UTF-8 form is valid UTF-8 by
// construction (`known_utf8`), so the checkers skip validating it; bytes may hold anything.
struct Text {
  std::string_view bytes;
  bool valid = true;
  bool known_utf8 = false;
};

Text text_arg(PyObject* obj, const ArgName& name) {
  if (PyBytes_Check(obj)) {
    return Text{std::string_view(PyBytes_AS_STRING(obj), static_cast<size_t>(PyBytes_GET_SIZE(obj))), true, false};
  }
  if (PyUnicode_Check(obj)) {
    Py_ssize_t size = 0;
    const char* data = PyUnicode_AsUTF8AndSize(obj, &size);
    if (data == nullptr) {
      PyErr_Clear();
      return Text{{}, false, false};
    }
    return Text{std::string_view(data, static_cast<size_t>(size)), true, true};
  }
  throw py::type_error(name.str() + " must be str or bytes, got " + type_name(obj));
}

int64_t int64_arg(PyObject* obj, const std::string& name) {
  if (!PyLong_Check(obj) && !PyIndex_Check(obj)) {
    throw py::type_error(name + " must be an int, got " + type_name(obj));
  }
  py::object as_int = py::reinterpret_steal<py::object>(PyNumber_Index(obj));
  if (!as_int) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(as_int.ptr(), &overflow);
  if (overflow != 0) throw py::value_error(name + " = " + py::str(obj).cast<std::string>() + " is outside int64");
  return v;
}

// The value of an exact int (not a subclass) that fits int64, or false. Ints that fit one CPython digit (the
// usual Countdown number) are read from the object without a call.
bool exact_int64(PyObject* obj, long long* out) {
  if (!PyLong_CheckExact(obj)) return false;
#if PY_VERSION_HEX < 0x030C0000
  const Py_ssize_t size = Py_SIZE(obj);  // the digit count, negated for negative ints
  if (size >= -1 && size <= 1) {
    *out = size == 0 ? 0 : size * static_cast<long long>(reinterpret_cast<PyLongObject*>(obj)->ob_digit[0]);
    return true;
  }
#else
  if (PyUnstable_Long_IsCompact(reinterpret_cast<PyLongObject*>(obj))) {
    *out = PyUnstable_Long_CompactValue(reinterpret_cast<PyLongObject*>(obj));
    return true;
  }
#endif
  int overflow = 0;
  *out = PyLong_AsLongLongAndOverflow(obj, &overflow);
  return overflow == 0;
}

// Exact ints in a list or tuple, the usual case, converted without a Python call; false (nothing appended) if
// any element needs the general path.
bool append_exact_ints(PyObject* seq, std::vector<int64_t>* out) {
  const bool is_list = PyList_CheckExact(seq);
  if (!is_list && !PyTuple_CheckExact(seq)) return false;
  const Py_ssize_t n = Py_SIZE(seq);
  PyObject** items = is_list ? reinterpret_cast<PyListObject*>(seq)->ob_item : &PyTuple_GET_ITEM(seq, 0);
  const size_t start = out->size();
  for (Py_ssize_t i = 0; i < n; ++i) {
    long long v;
    if (!exact_int64(items[i], &v)) {
      out->resize(start);
      return false;
    }
    out->push_back(v);
  }
  return true;
}

void append_numbers(PyObject* seq, const ArgName& name, std::vector<int64_t>* out) {
  if (append_exact_ints(seq, out)) return;
  // A tuple copy holds its own references: an element's __index__ may mutate or shrink `seq` meanwhile.
  py::object items = py::reinterpret_steal<py::object>(PySequence_Tuple(seq));
  if (!items) {
    PyErr_Clear();
    throw py::type_error(name.str() + " must be a sequence of ints, got " + type_name(seq));
  }
  const Py_ssize_t n = PyTuple_GET_SIZE(items.ptr());
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PyTuple_GET_ITEM(items.ptr(), i);
    long long v;
    out->push_back(exact_int64(item, &v) ? v : int64_arg(item, name.str() + "[" + std::to_string(i) + "]"));
  }
}

// A tuple of the batch's items: it keeps every item alive while the GIL is released.
py::tuple batch_arg(py::handle seq, const char* name) {
  PyObject* t = PySequence_Tuple(seq.ptr());
  if (t == nullptr) {
    PyErr_Clear();
    throw py::type_error(std::string(name) + " must be a sequence, got " + type_name(seq.ptr()));
  }
  return py::reinterpret_steal<py::tuple>(t);
}

void check_same_length(const py::tuple& items, const char* name, const py::tuple& ref, const char* ref_name) {
  if (items.size() != ref.size()) {
    throw py::value_error(std::string(name) + " has " + std::to_string(items.size()) + " entries but " + ref_name +
                          " has " + std::to_string(ref.size()) + "; expected one per " + ref_name + " entry");
  }
}

unsigned threads_arg(int num_threads) {
  if (num_threads < 0) throw py::value_error("num_threads must be >= 0 (0: all cores), got " + std::to_string(num_threads));
  return static_cast<unsigned>(num_threads);
}

py::list bool_list(const std::vector<Verdict>& verdicts) {
  py::list out(verdicts.size());
  for (size_t i = 0; i < verdicts.size(); ++i) {
    PyObject* b = verdicts[i] == Verdict::kPass ? Py_True : Py_False;
    Py_INCREF(b);
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), b);
  }
  return out;
}

py::tuple verdict_tuple(Verdict v) { return py::make_tuple(r3fast::verdict_name(v), r3fast::verdict_reason(v)); }

Verdict countdown_one(py::handle response, py::handle numbers, py::handle target) {
  const Text text = text_arg(response.ptr(), ArgName{"response"});
  std::vector<int64_t> nums;
  append_numbers(numbers.ptr(), ArgName{"numbers"}, &nums);
  const int64_t t = int64_arg(target.ptr(), "target");
  if (!text.valid) return Verdict::kInvalidText;
  if (text.bytes.size() < kReleaseGilBytes) {
    return r3fast::check_countdown(text.bytes, nums.data(), nums.size(), t, text.known_utf8);
  }
  py::gil_scoped_release release;
  return r3fast::check_countdown(text.bytes, nums.data(), nums.size(), t, text.known_utf8);
}

// Where an item's numbers are: a run in its block's storage.
struct NumbersSpan {
  uint32_t begin, size;
};

std::vector<Verdict> countdown_batch(py::handle responses, py::handle numbers, py::handle targets, int num_threads) {
  constexpr size_t kBlock = r3fast::PipelinedFor::kBlock;
  const unsigned threads = threads_arg(num_threads);
  const py::tuple items = batch_arg(responses, "responses");
  const py::tuple nums = batch_arg(numbers, "numbers");
  const py::tuple targs = batch_arg(targets, "targets");
  check_same_length(nums, "numbers", items, "responses");
  check_same_length(targs, "targets", items, "responses");
  const size_t n = items.size();
  // Each block's numbers get their own storage, complete before the block is published: checks read published
  // blocks while later ones are converted.
  std::vector<std::vector<int64_t>> block_numbers((n + kBlock - 1) / kBlock);
  std::vector<Text> texts(n);
  std::vector<NumbersSpan> spans(n);
  std::vector<int64_t> target_values(n);
  std::vector<Verdict> out(n);
  r3fast::PipelinedFor pipeline(n, threads, [&](size_t i) {
    const int64_t* given = block_numbers[i / kBlock].data() + spans[i].begin;
    out[i] = texts[i].valid ? r3fast::check_countdown(texts[i].bytes, given, spans[i].size, target_values[i],
                                                      texts[i].known_utf8)
                            : Verdict::kInvalidText;
  });
  for (size_t begin = 0; begin < n; begin += kBlock) {
    const size_t end = std::min(n, begin + kBlock);
    std::vector<int64_t>& storage = block_numbers[begin / kBlock];
    storage.reserve(4 * (end - begin));  // a Countdown task has a handful of numbers
    for (size_t i = begin; i < end; ++i) {
      const auto index = static_cast<Py_ssize_t>(i);
      texts[i] = text_arg(PyTuple_GET_ITEM(items.ptr(), index), ArgName{"responses", index});
      const size_t first = storage.size();
      append_numbers(PyTuple_GET_ITEM(nums.ptr(), index), ArgName{"numbers", index}, &storage);
      spans[i] = NumbersSpan{static_cast<uint32_t>(first), static_cast<uint32_t>(storage.size() - first)};
      PyObject* target = PyTuple_GET_ITEM(targs.ptr(), index);
      long long t;
      target_values[i] = exact_int64(target, &t) ? t : int64_arg(target, ArgName{"targets", index}.str());
    }
    pipeline.publish(end);
  }
  py::gil_scoped_release release;
  pipeline.finish();
  return out;
}

// A gold as the checker takes it: prepared (a FunctionCallGold object) or JSON text.
struct GoldArg {
  const r3fast::FunctionCallGold* prepared = nullptr;
  Text text;
};

std::string bad_gold_message(const ArgName& name) {
  return name.str() + " is not a JSON list of {\"name\": string, \"arguments\": object} calls (strict JSON, no " +
         "duplicate keys)";
}

Verdict check_calls(const Text& output, const GoldArg& gold) {
  if (gold.prepared != nullptr) {
    return output.valid ? r3fast::check_function_calls(output.bytes, *gold.prepared, output.known_utf8)
                        : Verdict::kInvalidText;
  }
  if (output.valid) return r3fast::check_function_calls(output.bytes, gold.text.bytes, output.known_utf8);
  // A bad gold must raise even when the output is not text.
  const bool bad_gold = r3fast::check_function_calls("", gold.text.bytes) == Verdict::kBadGold;
  return bad_gold ? Verdict::kBadGold : Verdict::kInvalidText;
}

// `gold_to_json` turns an already-parsed gold (a list of dicts) into JSON text; str and bytes pass as they are.
std::vector<Verdict> function_calls_batch(py::handle outputs, py::handle golds, int num_threads,
                                          const py::function& gold_to_json, const char* output_name,
                                          const char* gold_name, bool indexed) {
  const unsigned threads = threads_arg(num_threads);
  const py::tuple items = batch_arg(outputs, output_name);
  py::tuple gold_items = batch_arg(golds, gold_name);
  check_same_length(gold_items, gold_name, items, output_name);
  const size_t n = items.size();
  std::vector<Text> texts(n);
  std::vector<GoldArg> gold_args(n);
  std::vector<py::object> encoded;  // keeps JSON made from parsed golds alive
  // A GRPO group checks many outputs against one gold object: encode each distinct parsed gold once.
  std::unordered_map<PyObject*, size_t> encoded_index;
  const auto prepared_type = reinterpret_cast<PyTypeObject*>(py::type::of<r3fast::FunctionCallGold>().ptr());
  std::vector<Verdict> out(n);
  r3fast::PipelinedFor pipeline(n, threads, [&](size_t i) { out[i] = check_calls(texts[i], gold_args[i]); });
  for (size_t i = 0; i < n; ++i) {
    const ArgName name{gold_name, indexed ? static_cast<Py_ssize_t>(i) : -1};
    texts[i] = text_arg(PyTuple_GET_ITEM(items.ptr(), static_cast<Py_ssize_t>(i)), ArgName{output_name, name.index});
    py::handle g = PyTuple_GET_ITEM(gold_items.ptr(), static_cast<Py_ssize_t>(i));
    if (PyObject_TypeCheck(g.ptr(), prepared_type)) {
      gold_args[i].prepared = &g.cast<const r3fast::FunctionCallGold&>();
    } else {
      if (!PyUnicode_Check(g.ptr()) && !PyBytes_Check(g.ptr())) {
        const auto [it, added] = encoded_index.try_emplace(g.ptr(), encoded.size());
        if (added) encoded.push_back(gold_to_json(g, name.str()));
        g = encoded[it->second];
      }
      gold_args[i].text = text_arg(g.ptr(), name);
      if (!gold_args[i].text.valid) throw py::value_error(name.str() + " is not valid text (lone surrogates)");
    }
    if ((i + 1) % r3fast::PipelinedFor::kBlock == 0) pipeline.publish(i + 1);
  }
  {
    py::gil_scoped_release release;
    pipeline.finish();
  }
  for (size_t i = 0; i < n; ++i) {
    if (out[i] != Verdict::kBadGold) continue;
    throw py::value_error(bad_gold_message(ArgName{gold_name, indexed ? static_cast<Py_ssize_t>(i) : -1}));
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "r3fast native core";

  m.def("build_info", [] {
    const auto info = r3fast::build_info();
    py::dict d;
    d["flags"] = info.flags;
    d["compiler"] = info.compiler;
    d["sanitized"] = info.sanitized;
    return d;
  }, "Flags and compiler the extension was built with.");

  m.def("check_countdown", [](py::handle response, py::handle numbers, py::handle target) {
    return countdown_one(response, numbers, target) == Verdict::kPass;
  }, py::arg("response"), py::arg("numbers"), py::arg("target"));
  m.def("explain_countdown", [](py::handle response, py::handle numbers, py::handle target) {
    return verdict_tuple(countdown_one(response, numbers, target));
  }, py::arg("response"), py::arg("numbers"), py::arg("target"), "(code, reason) of one Countdown check.");
  m.def("check_countdown_batch", [](py::handle responses, py::handle numbers, py::handle targets, int num_threads) {
    return bool_list(countdown_batch(responses, numbers, targets, num_threads));
  }, py::arg("responses"), py::arg("numbers"), py::arg("targets"), py::arg("num_threads") = 0);
  m.def("explain_countdown_batch", [](py::handle responses, py::handle numbers, py::handle targets,
                                      int num_threads) {
    py::list out;
    for (Verdict v : countdown_batch(responses, numbers, targets, num_threads)) out.append(verdict_tuple(v));
    return out;
  }, py::arg("responses"), py::arg("numbers"), py::arg("targets"), py::arg("num_threads") = 0);

  py::class_<r3fast::FunctionCallGold>(m, "FunctionCallGold",
                                       "A gold answer parsed once; checks against it parse only the output.")
      .def(py::init([](py::handle gold) {
             const Text text = text_arg(gold.ptr(), ArgName{"gold"});
             auto prepared = std::make_unique<r3fast::FunctionCallGold>();
             if (!text.valid || prepared->parse(text.bytes) != Verdict::kPass) {
               throw py::value_error(bad_gold_message(ArgName{"gold"}));
             }
             return prepared;
           }),
           py::arg("gold"));

  m.def("check_function_calls", [](py::handle output, py::handle gold, const py::function& gold_to_json) {
    const auto verdicts = function_calls_batch(py::make_tuple(output), py::make_tuple(gold), 1, gold_to_json,
                                               "output", "gold", false);
    return verdicts[0] == Verdict::kPass;
  }, py::arg("output"), py::arg("gold"), py::arg("gold_to_json"));
  m.def("explain_function_calls", [](py::handle output, py::handle gold, const py::function& gold_to_json) {
    const auto verdicts = function_calls_batch(py::make_tuple(output), py::make_tuple(gold), 1, gold_to_json,
                                               "output", "gold", false);
    return verdict_tuple(verdicts[0]);
  }, py::arg("output"), py::arg("gold"), py::arg("gold_to_json"), "(code, reason) of one function-call check.");
  m.def("check_function_calls_batch", [](py::handle outputs, py::handle golds, int num_threads,
                                         const py::function& gold_to_json) {
    return bool_list(function_calls_batch(outputs, golds, num_threads, gold_to_json, "outputs", "golds", true));
  }, py::arg("outputs"), py::arg("golds"), py::arg("num_threads"), py::arg("gold_to_json"));
}
