// A fixed pool of worker threads with a static-partition parallel_for. Every kernel assigns each
// output element to exactly one task and fixes its summation order, so results never depend on
// the number of threads (DESIGN.md "Determinism").
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tl {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  int size() const { return threads_; }
  // Runs fn(begin, end) over [0, n) split into at most size() contiguous ranges of at least `grain`.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker(int index);
  int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_, call_mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0, job_chunk_ = 0;
  int job_tasks_ = 0;
  // A training step issues hundreds of short parallel regions: workers and the caller spin
  // briefly on these before sleeping, which saves a futex wake-up per region.
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
};

}  // namespace tl
