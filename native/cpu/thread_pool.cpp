#include "cpu/thread_pool.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace diffuse {
namespace {

thread_local bool inside_pool_task = false;

class ThreadPool {
 public:
  explicit ThreadPool(int threads) : size_(std::max(1, threads)) {
    for (int i = 1; i < size_; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int size() const { return size_; }

  void run(int64_t n_tasks, const std::function<void(int64_t)>& task) {
    std::lock_guard<std::mutex> job_lock(job_mutex_);  // one job at a time
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &task;
      n_tasks_ = n_tasks;
      next_.store(0);
      busy_workers_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return busy_workers_ == 0; });
    task_ = nullptr;
  }

 private:
  void work() {
    inside_pool_task = true;
    for (int64_t i; (i = next_.fetch_add(1)) < n_tasks_;) (*task_)(i);
    inside_pool_task = false;
  }

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stopping_) return;
      }
      work();
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (--busy_workers_ == 0) done_.notify_one();
      }
    }
  }

  const int size_;
  std::vector<std::thread> workers_;
  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  int busy_workers_ = 0;
};

int default_threads() {
  if (const char* env = std::getenv("DIFFUSE_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

std::mutex pool_mutex;
std::unique_ptr<ThreadPool> pool;

ThreadPool& get_pool() {
  std::lock_guard<std::mutex> lock(pool_mutex);
  if (!pool) pool = std::make_unique<ThreadPool>(default_threads());
  return *pool;
}

}  // namespace

int thread_count() { return get_pool().size(); }

void set_thread_count(int threads) {
  const int size = threads > 0 ? threads : default_threads();
  std::lock_guard<std::mutex> lock(pool_mutex);
  if (pool && pool->size() == size) return;
  pool = std::make_unique<ThreadPool>(size);
}

void parallel_tasks(int64_t n_tasks, const std::function<void(int64_t)>& task) {
  if (n_tasks <= 0) return;
  if (n_tasks == 1 || inside_pool_task) {
    for (int64_t i = 0; i < n_tasks; ++i) task(i);
    return;
  }
  ThreadPool& p = get_pool();
  if (p.size() == 1) {
    for (int64_t i = 0; i < n_tasks; ++i) task(i);
    return;
  }
  p.run(n_tasks, task);
}

}  // namespace diffuse
