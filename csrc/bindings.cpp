// The only file that knows about Python: converts arguments, releases the GIL, calls the C++ core.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "batch.hpp"
#include "build_info.hpp"
#include "countdown.hpp"
#include "function_calls.hpp"
#include "pod_buffer.hpp"
#include "verdict.hpp"

namespace py = pybind11;

namespace {

using r3fast::PodBuffer;
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

// The value of an exact int (not a subclass) small enough for CPython's compact form (at least 30 bits), read
// from the object's fields alone: helper threads call this while the calling thread holds the GIL.
bool compact_int64(PyObject* obj, int64_t* out) {
#if PY_VERSION_HEX < 0x030C0000
  const Py_ssize_t size = Py_SIZE(obj);  // the digit count, negated for negative ints
  if (size < -1 || size > 1) return false;
  *out = size == 0 ? 0 : size * static_cast<int64_t>(reinterpret_cast<PyLongObject*>(obj)->ob_digit[0]);
  return true;
#else
  if (!PyUnstable_Long_IsCompact(reinterpret_cast<PyLongObject*>(obj))) return false;
  *out = PyUnstable_Long_CompactValue(reinterpret_cast<PyLongObject*>(obj));
  return true;
#endif
}

// The value of an exact int (not a subclass) that fits int64, or false.
bool exact_int64(PyObject* obj, long long* out) {
  if (!PyLong_CheckExact(obj)) return false;
  int64_t v;
  if (compact_int64(obj, &v)) {
    *out = v;
    return true;
  }
  int overflow = 0;
  *out = PyLong_AsLongLongAndOverflow(obj, &overflow);
  return overflow == 0;
}

// The ints of a list or tuple appended to *out when every one is exact and compact (the usual Countdown
// numbers); false, with nothing appended, otherwise. Reads fields only, like compact_int64.
inline bool append_compact_ints(PyObject* seq, PodBuffer<int64_t>* out) {
  const bool is_list = PyList_CheckExact(seq);
  if (!is_list && !PyTuple_CheckExact(seq)) return false;
  const auto n = static_cast<size_t>(Py_SIZE(seq));
  PyObject* const* items = is_list ? reinterpret_cast<PyListObject*>(seq)->ob_item : &PyTuple_GET_ITEM(seq, 0);
  const size_t start = out->size();
  int64_t* const values = out->extend(n);
  for (size_t i = 0; i < n; ++i) {
    if (!PyLong_CheckExact(items[i]) || !compact_int64(items[i], &values[i])) {
      out->resize(start);
      return false;
    }
  }
  return true;
}

void append_numbers(PyObject* seq, const ArgName& name, PodBuffer<int64_t>* out) {
  if (append_compact_ints(seq, out)) return;
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
    const int64_t value = exact_int64(item, &v) ? v : int64_arg(item, name.str() + "[" + std::to_string(i) + "]");
    out->push_back(value);
  }
}

unsigned threads_arg(int num_threads) {
  if (num_threads < 0) throw py::value_error("num_threads must be >= 0 (0: all cores), got " + std::to_string(num_threads));
  return static_cast<unsigned>(num_threads);
}

// [verdict(i) == PASS for i in range(n)] as a Python list.
template <class VerdictAt>
py::list bool_list(size_t n, VerdictAt verdict) {
  py::list out(n);
  for (size_t i = 0; i < n; ++i) {
    PyObject* b = verdict(i) == Verdict::kPass ? Py_True : Py_False;
    Py_INCREF(b);
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), b);
  }
  return out;
}

py::tuple verdict_tuple(Verdict v) { return py::make_tuple(r3fast::verdict_name(v), r3fast::verdict_reason(v)); }

Verdict countdown_one(py::handle response, py::handle numbers, py::handle target) {
  const Text text = text_arg(response.ptr(), ArgName{"response"});
  PodBuffer<int64_t> nums;
  append_numbers(numbers.ptr(), ArgName{"numbers"}, &nums);
  const int64_t t = int64_arg(target.ptr(), "target");
  if (!text.valid) return Verdict::kInvalidText;
  if (text.bytes.size() < kReleaseGilBytes) {
    return r3fast::check_countdown(text.bytes, nums.data(), nums.size(), t, text.known_utf8);
  }
  py::gil_scoped_release release;
  return r3fast::check_countdown(text.bytes, nums.data(), nums.size(), t, text.known_utf8);
}

// A batch argument read item by item: a tuple, or a list read in place, or any other sequence through a tuple
// copy. With `own_items` a list is copied too: the copy holds a reference to every item, so the items outlive
// the GIL release whatever other threads do to the list meanwhile. Items are borrowed; Python code that runs
// while the batch is read (an __index__ method) may shrink a list read in place, so at() checks the size.
class BatchSequence {
 public:
  BatchSequence(py::handle seq, const char* name, bool own_items) : name_(name) {
    if (PyTuple_CheckExact(seq.ptr()) || (!own_items && PyList_CheckExact(seq.ptr()))) {
      obj_ = py::reinterpret_borrow<py::object>(seq);
    } else {
      PyObject* t = PySequence_Tuple(seq.ptr());
      if (t == nullptr) {
        PyErr_Clear();
        throw py::type_error(std::string(name) + " must be a sequence, got " + type_name(seq.ptr()));
      }
      obj_ = py::reinterpret_steal<py::object>(t);
    }
    is_list_ = PyList_CheckExact(obj_.ptr());
  }

  size_t size() const { return static_cast<size_t>(Py_SIZE(obj_.ptr())); }
  const char* name() const { return name_; }

  PyObject* at(size_t i) const {
    if (i >= size()) throw py::value_error(std::string(name_) + " changed size while the batch was read");
    return items_unchecked()[i];
  }
  // The items, valid only while no Python code runs: that code could resize a list.
  PyObject* const* items_unchecked() const {
    return is_list_ ? reinterpret_cast<PyListObject*>(obj_.ptr())->ob_item : &PyTuple_GET_ITEM(obj_.ptr(), 0);
  }

 private:
  py::object obj_;
  const char* name_;
  bool is_list_ = false;
};

void check_same_length(const BatchSequence& items, const BatchSequence& ref) {
  if (items.size() != ref.size()) {
    throw py::value_error(std::string(items.name()) + " has " + std::to_string(items.size()) + " entries but " +
                          ref.name() + " has " + std::to_string(ref.size()) + "; expected one per " + ref.name() +
                          " entry");
  }
}

// One Countdown check of a batch: its inputs as read under the GIL, then its verdict.
struct CountdownItem {
  const char* text;        // general items: the response's bytes, alive while the batch holds the response
  size_t text_size;
  int64_t target;
  uint32_t answer_begin;   // usual items: the answer, NUL-terminated, in its block's answer storage
  uint32_t answer_size;
  uint32_t numbers_begin;  // a run in its block's numbers storage, or in the general path's
  uint32_t numbers_size;
  bool general;            // read by the general path: check the whole text, numbers in the general storage
  bool known_utf8;
  Verdict verdict;         // kPass after the read while the check is still to do
};

// What the usual items of one block of a batch hold.
struct CountdownBlock {
  PodBuffer<int64_t> numbers;
  PodBuffer<char> answers;
};

// A thread's batch memory, kept between calls: a fresh 100k-item batch would otherwise page-fault megabytes in
// on every call before any check runs. A nested call on the same thread (from Python code that a batch runs,
// such as an __index__ method) finds it in use and takes fresh memory.
struct CountdownScratch {
  // Memory of bigger batches, or of unusually big blocks, is given back afterwards.
  static constexpr size_t kKeepItems = size_t{1} << 20;
  static constexpr size_t kKeepNumbers = size_t{1} << 20;
  static constexpr size_t kKeepAnswerBytes = size_t{1} << 16;
  std::vector<CountdownItem> items;
  std::vector<CountdownBlock> blocks;
  PodBuffer<int64_t> general_numbers;
  bool in_use = false;
};

class CountdownScratchLease {
 public:
  CountdownScratchLease() {
    thread_local CountdownScratch shared;
    scratch_ = shared.in_use ? &own_ : &shared;
    scratch_->in_use = true;
  }
  ~CountdownScratchLease() {
    if (scratch_->items.capacity() > CountdownScratch::kKeepItems) {
      scratch_->items = {};
      scratch_->blocks = std::vector<CountdownBlock>();
    }
    for (auto& block : scratch_->blocks) {
      if (block.numbers.capacity() > CountdownScratch::kKeepNumbers) block.numbers.release();
      if (block.answers.capacity() > CountdownScratch::kKeepAnswerBytes) block.answers.release();
    }
    if (scratch_->general_numbers.capacity() > CountdownScratch::kKeepNumbers) scratch_->general_numbers.release();
    scratch_->in_use = false;
  }
  CountdownScratchLease(const CountdownScratchLease&) = delete;
  CountdownScratchLease& operator=(const CountdownScratchLease&) = delete;
  CountdownScratch& operator*() { return *scratch_; }

 private:
  CountdownScratch own_;
  CountdownScratch* scratch_;
};

// The usual item (an ASCII str or bytes below kReleaseGilBytes, a list or tuple of small exact ints, a small exact
// int target) read without calling into Python at all, so any thread may do it while the caller holds the GIL:
// nothing can change or free the objects then. Its answer is found and copied out, so the check that follows
// needs nothing from the objects and the batch holds no reference to them. False, with the item marked for the
// general path, for anything else.
bool read_usual_item(PyObject* response, PyObject* numbers, PyObject* target, CountdownItem* item,
                     CountdownBlock* block) {
  item->general = true;
  std::string_view text;
  if (PyUnicode_CheckExact(response) && PyUnicode_IS_COMPACT_ASCII(response)) {
    text = std::string_view(static_cast<const char*>(PyUnicode_DATA(response)),
                            static_cast<size_t>(PyUnicode_GET_LENGTH(response)));
    item->known_utf8 = true;
  } else if (PyBytes_CheckExact(response)) {
    text = std::string_view(PyBytes_AS_STRING(response), static_cast<size_t>(PyBytes_GET_SIZE(response)));
    item->known_utf8 = false;
  } else {
    return false;
  }
  // A long text is searched with the GIL released, by the general path.
  if (text.size() >= kReleaseGilBytes) return false;
  if (!PyLong_CheckExact(target) || !compact_int64(target, &item->target)) return false;
  const size_t first = block->numbers.size();
  if (!append_compact_ints(numbers, &block->numbers)) return false;
  item->numbers_begin = static_cast<uint32_t>(first);
  item->numbers_size = static_cast<uint32_t>(block->numbers.size() - first);
  item->general = false;
  std::string_view answer;
  item->verdict = r3fast::find_countdown_answer(text, item->known_utf8, &answer);
  if (item->verdict == Verdict::kPass) {
    item->answer_begin = static_cast<uint32_t>(block->answers.size());
    item->answer_size = static_cast<uint32_t>(answer.size());
    char* const copy = block->answers.extend(answer.size() + 1);
    std::memcpy(copy, answer.data(), answer.size());
    copy[answer.size()] = '\0';
  }
  return true;
}

// Any other item, on the calling thread: Python code may run here (an __index__ method), so it holds its own
// references to what it reads. The response stays in *held until the batch is done.
void read_general_item(const BatchSequence& responses, const BatchSequence& numbers, const BatchSequence& targets,
                       size_t i, CountdownScratch* scratch, std::vector<py::object>* held, CountdownItem* item) {
  const auto index = static_cast<Py_ssize_t>(i);
  held->push_back(py::reinterpret_borrow<py::object>(responses.at(i)));
  const Text text = text_arg(held->back().ptr(), ArgName{"responses", index});
  const py::object nums = py::reinterpret_borrow<py::object>(numbers.at(i));
  const size_t first = scratch->general_numbers.size();
  append_numbers(nums.ptr(), ArgName{"numbers", index}, &scratch->general_numbers);
  const py::object target = py::reinterpret_borrow<py::object>(targets.at(i));
  long long t;
  item->target = exact_int64(target.ptr(), &t) ? t : int64_arg(target.ptr(), ArgName{"targets", index}.str());
  item->text = text.bytes.data();
  item->text_size = text.bytes.size();
  item->verdict = text.valid ? Verdict::kPass : Verdict::kInvalidText;
  item->known_utf8 = text.known_utf8;
  item->numbers_begin = static_cast<uint32_t>(first);
  item->numbers_size = static_cast<uint32_t>(scratch->general_numbers.size() - first);
}

// Checks a batch in three phases: the usual items are read on every thread while the caller holds the GIL
// (no Python code runs, so the batch cannot change); the others are read on the calling thread, which may run
// Python code; then the GIL is released and every thread checks. Returns to_result(items, n), built under the GIL.
template <class ToResult>
py::object countdown_batch(py::handle responses, py::handle numbers, py::handle targets, int num_threads,
                           ToResult to_result) {
  constexpr size_t kBlock = r3fast::BlockTeam::kBlock;
  const unsigned threads = threads_arg(num_threads);
  const BatchSequence items(responses, "responses", /*own_items=*/false);
  const BatchSequence nums(numbers, "numbers", /*own_items=*/false);
  const BatchSequence targs(targets, "targets", /*own_items=*/false);
  check_same_length(nums, items);
  check_same_length(targs, items);
  const size_t n = items.size();
  CountdownScratchLease lease;
  CountdownScratch& scratch = *lease;
  scratch.items.resize(n);
  scratch.general_numbers.clear();
  const size_t num_blocks = (n + kBlock - 1) / kBlock;
  if (scratch.blocks.size() < num_blocks) scratch.blocks.resize(num_blocks);
  CountdownItem* const item = scratch.items.data();
  CountdownBlock* const blocks = scratch.blocks.data();
  r3fast::BlockTeam team(n, threads);

  std::atomic<bool> any_general{false};
  team.run([&](size_t begin, size_t end) {
    CountdownBlock& block = blocks[begin / kBlock];
    block.numbers.clear();
    block.answers.clear();
    bool general = false;
    PyObject* const* const response = items.items_unchecked();
    PyObject* const* const number_list = nums.items_unchecked();
    PyObject* const* const target = targs.items_unchecked();
    for (size_t i = begin; i < end; ++i) {
      general |= !read_usual_item(response[i], number_list[i], target[i], &item[i], &block);
    }
    if (general) any_general.store(true, std::memory_order_relaxed);
  });
  std::vector<py::object> held;  // the responses of general items, whose texts are checked in place
  if (any_general.load(std::memory_order_relaxed)) {
    for (size_t i = 0; i < n; ++i) {
      if (item[i].general) read_general_item(items, nums, targs, i, &scratch, &held, &item[i]);
    }
  }
  {
    py::gil_scoped_release release;
    const int64_t* const general_numbers = scratch.general_numbers.data();
    team.run([&](size_t begin, size_t end) {
      const CountdownBlock& block = blocks[begin / kBlock];
      for (size_t i = begin; i < end; ++i) {
        CountdownItem& it = item[i];
        if (it.verdict != Verdict::kPass) continue;
        it.verdict = it.general
                         ? r3fast::check_countdown(std::string_view(it.text, it.text_size),
                                                   general_numbers + it.numbers_begin, it.numbers_size, it.target,
                                                   it.known_utf8)
                         : r3fast::check_countdown_answer(block.answers.data() + it.answer_begin, it.answer_size,
                                                          block.numbers.data() + it.numbers_begin,
                                                          it.numbers_size, it.target);
      }
    });
  }
  return to_result(item, n);
}

py::object countdown_bools(const CountdownItem* items, size_t n) {
  return bool_list(n, [items](size_t i) { return items[i].verdict; });
}

py::object countdown_verdicts(const CountdownItem* items, size_t n) {
  py::list out(n);
  for (size_t i = 0; i < n; ++i) {
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), verdict_tuple(items[i].verdict).release().ptr());
  }
  return std::move(out);
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
  const BatchSequence items(outputs, output_name, /*own_items=*/true);
  const BatchSequence gold_items(golds, gold_name, /*own_items=*/true);
  check_same_length(gold_items, items);
  const size_t n = items.size();
  std::vector<Text> texts(n);
  std::vector<GoldArg> gold_args(n);
  std::vector<py::object> encoded;  // keeps JSON made from parsed golds alive
  // A GRPO group checks many outputs against one gold object: encode each distinct parsed gold once.
  std::unordered_map<PyObject*, size_t> encoded_index;
  const auto prepared_type = reinterpret_cast<PyTypeObject*>(py::type::of<r3fast::FunctionCallGold>().ptr());
  std::vector<Verdict> out(n);
  r3fast::PipelinedFor pipeline(n, threads, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) out[i] = check_calls(texts[i], gold_args[i]);
  });
  for (size_t i = 0; i < n; ++i) {
    const ArgName name{gold_name, indexed ? static_cast<Py_ssize_t>(i) : -1};
    texts[i] = text_arg(items.at(i), ArgName{output_name, name.index});
    py::handle g = gold_items.at(i);
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
    return countdown_batch(responses, numbers, targets, num_threads, countdown_bools);
  }, py::arg("responses"), py::arg("numbers"), py::arg("targets"), py::arg("num_threads") = 0);
  m.def("explain_countdown_batch", [](py::handle responses, py::handle numbers, py::handle targets,
                                      int num_threads) {
    return countdown_batch(responses, numbers, targets, num_threads, countdown_verdicts);
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
    const auto verdicts = function_calls_batch(outputs, golds, num_threads, gold_to_json, "outputs", "golds", true);
    return bool_list(verdicts.size(), [&verdicts](size_t i) { return verdicts[i]; });
  }, py::arg("outputs"), py::arg("golds"), py::arg("num_threads"), py::arg("gold_to_json"));
}
