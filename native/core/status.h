// Status: the only way native code reports failure. Nothing in native/ exits, aborts or throws
// across the N-API boundary; napi turns a failed Status into a TernlabError with the same code.
#pragma once
#include <string>
#include <utility>

namespace tl {

enum class Code { Ok, Option, Shape, Backend, Cuda, Oom, Checkpoint, Cancelled, Dataset, Internal };

inline const char* code_name(Code c) {
  switch (c) {
    case Code::Ok: return "OK";
    case Code::Option: return "E_OPTION";
    case Code::Shape: return "E_SHAPE";
    case Code::Backend: return "E_BACKEND";
    case Code::Cuda: return "E_CUDA";
    case Code::Oom: return "E_OOM";
    case Code::Checkpoint: return "E_CHECKPOINT";
    case Code::Cancelled: return "E_CANCELLED";
    case Code::Dataset: return "E_DATASET";
    default: return "E_INTERNAL";
  }
}

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status ok() { return Status(); }
  bool is_ok() const { return code_ == Code::Ok; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // "[E_CODE] message": the form src/errors.ts parses.
  std::string formatted() const { return std::string("[") + code_name(code_) + "] " + message_; }

 private:
  Code code_ = Code::Ok;
  std::string message_;
};

#define TL_TRY(expr)                       \
  do {                                     \
    ::tl::Status tl_status_ = (expr);      \
    if (!tl_status_.is_ok()) return tl_status_; \
  } while (0)

}  // namespace tl
