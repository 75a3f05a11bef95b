// The only file that knows about Python. Each batch function converts its arguments to plain C++ values while it
// holds the GIL (texts copied into one buffer, numbers, pointers to prepared golds), then releases the GIL and
// calls the C++ core, whose threads touch no Python object. A single check converts the same way and runs on the
// calling thread.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "batch.hpp"
#include "build_info.hpp"
#include "countdown.hpp"
#include "function_calls.hpp"
#include "verdict.hpp"

namespace py = pybind11;

namespace {

using r3fast::FunctionCallGold;
using r3fast::TextForm;
using r3fast::TextRef;
using r3fast::Verdict;

// A single check keeps the GIL while it runs unless its text is long enough for handing it back to pay off;
// a long text is copied first, so the check without the GIL reads no Python object.
constexpr size_t kReleaseGilBytes = size_t{1} << 16;

std::string type_name(py::handle obj) { return Py_TYPE(obj.ptr())->tp_name; }

// An argument's name for error messages, e.g. numbers[3][0]; formatted only when an error is raised.
struct ArgName {
  const char* base;
  Py_ssize_t index = -1;    // -1: not an element of a batch
  Py_ssize_t element = -1;  // -1: not an element of a sequence argument

  std::string str() const {
    std::string s = base;
    for (const Py_ssize_t i : {index, element}) {
      if (i >= 0) s += "[" + std::to_string(i) + "]";
    }
    return s;
  }
};

// The bytes of a str or bytes argument, borrowed from the object, which must outlive their use. A str with no
// UTF-8 form (lone surrogates) is a failed check, not an error; a str's UTF-8 form is valid UTF-8 by
// construction, so its check skips validating it. Both kinds of object are immutable, and a str keeps its UTF-8
// form until it is freed.
TextRef text_ref(py::handle obj, const ArgName& name) {
  if (PyBytes_Check(obj.ptr())) {
    return {{PyBytes_AS_STRING(obj.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(obj.ptr()))}, TextForm::kBytes};
  }
  if (!PyUnicode_Check(obj.ptr())) throw py::type_error(name.str() + " must be str or bytes, got " + type_name(obj));
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(obj.ptr(), &size);
  if (data == nullptr) {
    PyErr_Clear();
    return {{}, TextForm::kNotText};
  }
  return {{data, static_cast<size_t>(size)}, TextForm::kUtf8};
}

int64_t int64_arg(py::handle obj, const ArgName& name) {
  int overflow = 0;
  long long v;
  if (PyLong_CheckExact(obj.ptr())) {  // the usual case: converts without running Python code
    v = PyLong_AsLongLongAndOverflow(obj.ptr(), &overflow);
  } else {  // anything else goes through its __index__
    if (!PyLong_Check(obj.ptr()) && !PyIndex_Check(obj.ptr())) {
      throw py::type_error(name.str() + " must be an int, got " + type_name(obj));
    }
    const auto as_int = py::reinterpret_steal<py::object>(PyNumber_Index(obj.ptr()));
    if (!as_int) throw py::error_already_set();
    v = PyLong_AsLongLongAndOverflow(as_int.ptr(), &overflow);
  }
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow != 0) throw py::value_error(name.str() + " = " + py::str(obj).cast<std::string>() + " is outside int64");
  return v;
}

// A sequence argument as a tuple. The tuple holds its own references to the items, so Python code that runs
// while they are read (an __index__ method) cannot change or free what is still to be read, nor the texts
// borrowed from them.
py::tuple tuple_arg(py::handle seq, const ArgName& name, const char* what) {
  if (PyTuple_Check(seq.ptr())) return py::reinterpret_borrow<py::tuple>(seq);
  PyObject* t = PySequence_Tuple(seq.ptr());
  if (t == nullptr) {
    PyErr_Clear();
    throw py::type_error(name.str() + " must be " + what + ", got " + type_name(seq));
  }
  return py::reinterpret_steal<py::tuple>(t);
}

py::handle item(const py::tuple& t, size_t i) { return PyTuple_GET_ITEM(t.ptr(), static_cast<Py_ssize_t>(i)); }

void check_same_length(const py::tuple& items, const char* items_name, const py::tuple& ref, const char* ref_name) {
  if (items.size() != ref.size()) {
    throw py::value_error(std::string(items_name) + " has " + std::to_string(items.size()) + " entries but " +
                          ref_name + " has " + std::to_string(ref.size()) + "; expected one per " + ref_name +
                          " entry");
  }
}

unsigned threads_arg(int num_threads) {
  if (num_threads < 0) throw py::value_error("num_threads must be >= 0 (0: all cores), got " + std::to_string(num_threads));
  return static_cast<unsigned>(num_threads);
}

// ------------------------------------------------------------------------------------------------ verdicts

constexpr size_t kVerdicts = static_cast<size_t>(Verdict::kBadGold) + 1;

// (code, reason) of every verdict, in Verdict order: the module's VERDICTS.
py::tuple verdict_pairs() {
  py::tuple pairs(kVerdicts);
  for (size_t i = 0; i < kVerdicts; ++i) {
    const auto v = static_cast<Verdict>(i);
    pairs[i] = py::make_tuple(r3fast::verdict_name(v), r3fast::verdict_reason(v));
  }
  return pairs;
}

// The objects that stand for the verdicts, one per entry of VERDICTS: the caller makes them once (r3fast.verify:
// its Verdict objects), so a batch returns shared objects and makes none.
class VerdictObjects {
 public:
  explicit VerdictObjects(py::handle table) : table_(table) {
    if (!PyTuple_CheckExact(table.ptr()) || PyTuple_GET_SIZE(table.ptr()) != static_cast<Py_ssize_t>(kVerdicts)) {
      throw py::type_error("verdicts must be a tuple of " + std::to_string(kVerdicts) +
                           " objects, one per entry of VERDICTS, got " + type_name(table));
    }
  }
  py::object of(Verdict v) const { return py::reinterpret_borrow<py::object>(at(v)); }
  py::list of(const std::vector<Verdict>& verdicts) const {
    py::list out(verdicts.size());
    for (size_t i = 0; i < verdicts.size(); ++i) {
      PyObject* obj = at(verdicts[i]);
      Py_INCREF(obj);
      PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), obj);
    }
    return out;
  }

 private:
  PyObject* at(Verdict v) const { return PyTuple_GET_ITEM(table_.ptr(), static_cast<Py_ssize_t>(v)); }
  py::handle table_;
};

// ------------------------------------------------------------------------------------------------ Countdown

// Appends a sequence of ints. The usual list or tuple of exact ints is read in place: no Python code runs
// meanwhile, so under the GIL it cannot change (a free-threaded build reads only a tuple in place). Anything else
// goes through a tuple copy, as an element's __index__ may change the sequence.
void append_numbers(py::handle seq, const ArgName& name, std::vector<int64_t>* out) {
#ifdef Py_GIL_DISABLED
  const bool in_place = PyTuple_CheckExact(seq.ptr());
#else
  const bool in_place = PyList_CheckExact(seq.ptr()) || PyTuple_CheckExact(seq.ptr());
#endif
  if (in_place) {
    const size_t start = out->size();
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
    PyObject** const numbers = PySequence_Fast_ITEMS(seq.ptr());
    // One allocation for a single check's numbers, not one per doubling; geometric, as a batch appends many.
    if (out->capacity() < start + n) out->reserve(std::max(start + n, 2 * out->capacity()));
    bool usual = true;
    for (Py_ssize_t j = 0; j < n && usual; ++j) {
      int overflow = 0;
      const long long v = PyLong_CheckExact(numbers[j]) ? PyLong_AsLongLongAndOverflow(numbers[j], &overflow) : 0;
      usual = PyLong_CheckExact(numbers[j]) && overflow == 0;
      out->push_back(v);
    }
    if (usual) return;
    out->resize(start);
  }
  const py::tuple nums = tuple_arg(seq, name, "a sequence of ints");
  for (size_t j = 0; j < nums.size(); ++j) {
    out->push_back(int64_arg(item(nums, j), ArgName{name.base, name.index, static_cast<Py_ssize_t>(j)}));
  }
}

// A batch's arguments as plain values. The texts are borrowed from `responses` until they are copied, once, at
// the end.
r3fast::CountdownBatch countdown_batch(const py::tuple& responses, const py::tuple& numbers,
                                       const py::tuple& targets) {
  const size_t n = responses.size();
  std::vector<TextRef> texts;
  texts.reserve(n);
  r3fast::CountdownBatch batch;
  batch.numbers.reserve(4 * n);  // Countdown's usual 3 to 4 numbers; more grows the vector
  batch.number_ends.reserve(n);
  batch.targets.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const auto index = static_cast<Py_ssize_t>(i);
    texts.push_back(text_ref(item(responses, i), ArgName{"responses", index}));
    append_numbers(item(numbers, i), ArgName{"numbers", index}, &batch.numbers);
    batch.number_ends.push_back(batch.numbers.size());
    batch.targets.push_back(int64_arg(item(targets, i), ArgName{"targets", index}));
  }
  batch.responses = r3fast::TextBatch(texts);
  return batch;
}

// The checks of a batch, with the GIL released: the batch holds only plain C++ values.
std::vector<Verdict> check_without_gil(const r3fast::CountdownBatch& batch, unsigned num_threads) {
  py::gil_scoped_release release;
  return r3fast::check_countdown_batch(batch, num_threads);
}

Verdict countdown_one(py::handle response, py::handle numbers, py::handle target) {
  const TextRef text = text_ref(response, ArgName{"response"});
  std::vector<int64_t> nums;
  append_numbers(numbers, ArgName{"numbers"}, &nums);
  const int64_t t = int64_arg(target, ArgName{"target"});
  if (text.bytes.size() < kReleaseGilBytes) return r3fast::check_countdown(text, nums.data(), nums.size(), t);
  const std::string copy(text.bytes);
  py::gil_scoped_release release;
  return r3fast::check_countdown(TextRef{copy, text.form}, nums.data(), nums.size(), t);
}

// ------------------------------------------------------------------------------------------- function calls

std::string bad_gold_message(const ArgName& name) {
  return name.str() + " is not a JSON list of {\"name\": string, \"arguments\": object} calls (strict JSON, no " +
         "duplicate keys)";
}

// A gold's JSON text; raises, naming it, for anything but text with a UTF-8 form.
TextRef gold_text_ref(py::handle gold, const ArgName& name) {
  if (!PyUnicode_Check(gold.ptr()) && !PyBytes_Check(gold.ptr())) {
    throw py::type_error(name.str() + " must be JSON text (str or bytes) or a FunctionCallGold, got " +
                         type_name(gold));
  }
  const TextRef text = text_ref(gold, name);
  if (text.form == TextForm::kNotText) throw py::value_error(bad_gold_message(name));
  return text;
}

// A gold prepared from JSON text (str or bytes); a malformed gold raises, naming it.
std::unique_ptr<FunctionCallGold> parse_gold(py::handle text, const ArgName& name) {
  const TextRef bytes = text_ref(text, name);
  auto gold = std::make_unique<FunctionCallGold>();
  if (bytes.form == TextForm::kNotText || gold->parse(bytes.bytes) != Verdict::kPass) {
    throw py::value_error(bad_gold_message(name));
  }
  return gold;
}

// The C++ gold inside a FunctionCallGold object, or null for any other object.
const FunctionCallGold* prepared_gold(py::handle gold, PyTypeObject* gold_type) {
  return PyObject_TypeCheck(gold.ptr(), gold_type) ? &gold.cast<const FunctionCallGold&>() : nullptr;
}

PyTypeObject* gold_type() { return reinterpret_cast<PyTypeObject*>(py::type::of<FunctionCallGold>().ptr()); }

// A batch's arguments as plain values; the golds and texts are borrowed from `outputs` and `golds`, and the texts
// are copied, once, at the end. A prepared gold is read, and a text gold copied, once per run of items that share
// one gold object (a GRPO group).
r3fast::FunctionCallBatch function_call_batch(const py::tuple& outputs, const py::tuple& golds) {
  const size_t n = outputs.size();
  PyTypeObject* const prepared_type = gold_type();
  std::vector<TextRef> output_texts, gold_texts;
  output_texts.reserve(n);
  r3fast::FunctionCallBatch batch;
  batch.golds.reserve(n);
  batch.gold_text.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const auto index = static_cast<Py_ssize_t>(i);
    const py::handle gold = item(golds, i);
    if (i > 0 && gold.is(item(golds, i - 1))) {
      batch.golds.push_back(batch.golds.back());
      batch.gold_text.push_back(batch.gold_text.back());
    } else if (const FunctionCallGold* prepared = prepared_gold(gold, prepared_type)) {
      batch.golds.push_back(prepared);
      batch.gold_text.push_back(0);  // unused
    } else {
      batch.golds.push_back(nullptr);
      batch.gold_text.push_back(gold_texts.size());
      gold_texts.push_back(gold_text_ref(gold, ArgName{"golds", index}));
    }
    output_texts.push_back(text_ref(item(outputs, i), ArgName{"outputs", index}));
  }
  batch.outputs = r3fast::TextBatch(output_texts);
  batch.gold_texts = r3fast::TextBatch(gold_texts);
  return batch;
}

// The checks of a batch with the GIL released; a malformed text gold raises, naming the first item that has one.
std::vector<Verdict> function_call_verdicts(const r3fast::FunctionCallBatch& batch, unsigned num_threads) {
  std::vector<Verdict> verdicts;
  {
    py::gil_scoped_release release;
    verdicts = r3fast::check_function_calls_batch(batch, num_threads);
  }
  for (size_t i = 0; i < verdicts.size(); ++i) {
    if (verdicts[i] == Verdict::kBadGold) {
      throw py::value_error(bad_gold_message(ArgName{"golds", static_cast<Py_ssize_t>(i)}));
    }
  }
  return verdicts;
}

Verdict function_calls_one(py::handle output, py::handle gold) {
  const FunctionCallGold* prepared = prepared_gold(gold, gold_type());
  const TextRef gold_text = prepared != nullptr ? TextRef{} : gold_text_ref(gold, ArgName{"gold"});
  const TextRef text = text_ref(output, ArgName{"output"});
  Verdict v;
  if (text.bytes.size() + gold_text.bytes.size() < kReleaseGilBytes) {
    v = r3fast::check_function_calls(text, prepared, gold_text.bytes);
  } else {
    const std::string text_copy(text.bytes), gold_copy(gold_text.bytes);
    py::gil_scoped_release release;
    v = r3fast::check_function_calls(TextRef{text_copy, text.form}, prepared, gold_copy);
  }
  if (v == Verdict::kBadGold) throw py::value_error(bad_gold_message(ArgName{"gold"}));
  return v;
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

  m.attr("VERDICTS") = verdict_pairs();

  m.def("check_countdown", [](py::handle response, py::handle numbers, py::handle target) {
    return countdown_one(response, numbers, target) == Verdict::kPass;
  }, py::arg("response"), py::arg("numbers"), py::arg("target"), "Whether one Countdown response passes.");
  m.def("explain_countdown", [](py::handle response, py::handle numbers, py::handle target, py::handle verdicts) {
    const VerdictObjects objects(verdicts);
    return objects.of(countdown_one(response, numbers, target));
  }, py::arg("response"), py::arg("numbers"), py::arg("target"), py::arg("verdicts"),
     "verdicts[i] for the verdict of one Countdown check, i its index in VERDICTS.");
  m.def("explain_countdown_batch", [](py::handle responses, py::handle numbers, py::handle targets,
                                      int num_threads, py::handle verdicts) {
    const VerdictObjects objects(verdicts);
    const unsigned threads = threads_arg(num_threads);
    const py::tuple items = tuple_arg(responses, ArgName{"responses"}, "a sequence");
    const py::tuple nums = tuple_arg(numbers, ArgName{"numbers"}, "a sequence");
    const py::tuple targs = tuple_arg(targets, ArgName{"targets"}, "a sequence");
    check_same_length(nums, "numbers", items, "responses");
    check_same_length(targs, "targets", items, "responses");
    const r3fast::CountdownBatch batch = countdown_batch(items, nums, targs);
    return objects.of(check_without_gil(batch, threads));
  }, py::arg("responses"), py::arg("numbers"), py::arg("targets"), py::arg("num_threads"), py::arg("verdicts"),
     "explain_countdown over a batch, on num_threads threads (0: all cores).");

  py::class_<FunctionCallGold>(m, "FunctionCallGold",
                               "A gold answer parsed once; checks against it parse only the output.")
      .def(py::init([](py::handle gold, const std::string& name) { return parse_gold(gold, ArgName{name.c_str()}); }),
           py::arg("gold"), py::arg("name") = "gold");

  m.def("check_function_calls", [](py::handle output, py::handle gold) {
    return function_calls_one(output, gold) == Verdict::kPass;
  }, py::arg("output"), py::arg("gold"), "Whether one output holds the gold calls.");
  m.def("explain_function_calls", [](py::handle output, py::handle gold, py::handle verdicts) {
    const VerdictObjects objects(verdicts);
    return objects.of(function_calls_one(output, gold));
  }, py::arg("output"), py::arg("gold"), py::arg("verdicts"),
     "verdicts[i] for the verdict of one function-call check, i its index in VERDICTS.");
  m.def("explain_function_calls_batch", [](py::handle outputs, py::handle golds, int num_threads,
                                           py::handle verdicts) {
    const VerdictObjects objects(verdicts);
    const unsigned threads = threads_arg(num_threads);
    const py::tuple items = tuple_arg(outputs, ArgName{"outputs"}, "a sequence");
    const py::tuple gold_items = tuple_arg(golds, ArgName{"golds"}, "a sequence");
    check_same_length(gold_items, "golds", items, "outputs");
    return objects.of(function_call_verdicts(function_call_batch(items, gold_items), threads));
  }, py::arg("outputs"), py::arg("golds"), py::arg("num_threads"), py::arg("verdicts"),
     "explain_function_calls over a batch, on num_threads threads (0: all cores).");
}
