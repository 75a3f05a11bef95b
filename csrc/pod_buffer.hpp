// PodBuffer: the growable array the checkers and batches fill on their hot paths.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>
#include <type_traits>

namespace r3fast {

// A growable array of trivially copyable values that never zero-fills and inlines its appends: the append
// paths of std::string and std::vector cost more than the copying here.
template <class T>
class PodBuffer {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  size_t size() const { return size_; }
  size_t capacity() const { return cap_; }
  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  T* begin() { return data_.get(); }
  T* end() { return data_.get() + size_; }
  const T* begin() const { return data_.get(); }
  const T* end() const { return data_.get() + size_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  T& back() { return data_[size_ - 1]; }
  std::string_view view() const { return std::string_view(data_.get(), size_); }  // bytes only
  void clear() { size_ = 0; }
  void release() { *this = PodBuffer(); }

  // Makes room for n more values and returns where they start; the caller fills them.
  T* extend(size_t n) {
    if (cap_ - size_ < n) grow(size_ + n);
    T* p = data_.get() + size_;
    size_ += n;
    return p;
  }
  void resize(size_t n) {
    if (n > cap_) grow(n);
    size_ = n;
  }
  void push_back(const T& v) { *extend(1) = v; }
  void append(const T* p, size_t n) {
    if (n != 0) std::memcpy(extend(n), p, n * sizeof(T));
  }
  PodBuffer& operator+=(std::string_view s) {  // bytes only
    append(s.data(), s.size());
    return *this;
  }
  PodBuffer& operator+=(T c) {
    push_back(c);
    return *this;
  }

 private:
  void grow(size_t need) {
    // A small first size: a prepared gold keeps its buffers, and thousands of them should stay compact.
    const size_t cap = std::max(need, std::max<size_t>(2 * cap_, std::max<size_t>(16, 256 / sizeof(T))));
    std::unique_ptr<T[]> bigger(new T[cap]);
    if (size_ != 0) std::memcpy(bigger.get(), data_.get(), size_ * sizeof(T));
    data_ = std::move(bigger);
    cap_ = cap;
  }

  std::unique_ptr<T[]> data_;
  size_t size_ = 0;
  size_t cap_ = 0;
};

}  // namespace r3fast
