#include "thread_pool.h"

#include <immintrin.h>

namespace tl {

namespace {
constexpr int kSpins = 1 << 14;  // ≈ 0.1–0.5 ms of pause instructions before sleeping
}

ThreadPool::ThreadPool(int threads) : threads_(threads < 1 ? 1 : threads) {
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int64_t tasks = (n + grain - 1) / grain;
  if (tasks > threads_) tasks = threads_;
  if (tasks <= 1) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mu_);  // one parallel region at a time
  const int64_t chunk = (n + tasks - 1) / tasks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    job_n_ = n;
    job_chunk_ = chunk;
    job_tasks_ = static_cast<int>(tasks);
    pending_.store(static_cast<int>(tasks) - 1);
    generation_.fetch_add(1);
  }
  start_cv_.notify_all();
  fn(0, chunk < n ? chunk : n);  // the calling thread takes task 0
  for (int s = 0; s < kSpins && pending_.load(std::memory_order_acquire) != 0; ++s) _mm_pause();
  if (pending_.load(std::memory_order_acquire) != 0) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return pending_.load() == 0; });
  }
  job_ = nullptr;
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    for (int s = 0; s < kSpins && generation_.load(std::memory_order_acquire) == seen; ++s) _mm_pause();
    const std::function<void(int64_t, int64_t)>* job;
    int64_t begin, end;
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return generation_.load() != seen; });
      if (stop_) return;
      seen = generation_.load();
      if (index >= job_tasks_) continue;
      job = job_;
      begin = index * job_chunk_;
      end = begin + job_chunk_ < job_n_ ? begin + job_chunk_ : job_n_;
    }
    if (begin < end) (*job)(begin, end);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);  // pairs with the caller's wait: no lost wake-up
      done_cv_.notify_one();
    }
  }
}

}  // namespace tl
