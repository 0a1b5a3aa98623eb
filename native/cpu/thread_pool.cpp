#include "cpu/thread_pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <sys/resource.h>

namespace diffuse {
namespace {

thread_local bool inside_pool_task = false;

// Waiting is polling first, then sleeping. A step runs ~800 jobs, and waking a sleeping thread
// (a futex, on a VM a halted vCPU woken through the host) costs 50-300 us each time, so a thread
// that runs out of work polls for its event (a worker: the next job; the caller: the workers'
// end) for up to a budget before it sleeps on the condition variable. The budget adapts per
// thread to contention alone: a poll that finds the thread preempted since its last one (its
// involuntary context switches grew: more runnable threads than cores) quarters it, so on a
// busy machine polling fades instead of holding a core that the partner or another process
// needs; any other poll doubles it, up to the cap. Whether the event came in time says
// nothing: a long gap (the step's end, a serial stretch) does not predict the next one, and
// halving on timeouts drove the budget to zero, where no event comes soon enough to raise it
// again (on a Xeon the worker then slept through 88 % of a step's ~960 jobs).
// DIFFUSE_SPIN_US sets the cap (0: always sleep at once).
int64_t spin_cap_ns() {
  static const int64_t cap = [] {
    if (const char* env = std::getenv("DIFFUSE_SPIN_US")) return std::max<int64_t>(0, std::atoll(env)) * 1000;
    return int64_t{200'000};
  }();
  return cap;
}

class Poller {
 public:
  // Polls ready() for up to this thread's budget; true when it became true in time.
  template <typename Ready>
  bool poll(Ready&& ready) {
    const int64_t cap = spin_cap_ns();
    if (cap == 0) return ready();
    if (budget_ns_ < 0) budget_ns_ = cap;
    rusage usage{};
    getrusage(RUSAGE_THREAD, &usage);
    const bool preempted = usage.ru_nivcsw != involuntary_switches_;
    involuntary_switches_ = usage.ru_nivcsw;
    budget_ns_ = preempted ? budget_ns_ / 4 : std::min(cap, std::max<int64_t>(2 * budget_ns_, 1000));
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0;; ++i) {
      if (ready()) return true;
      if ((i & 63) == 63 && std::chrono::steady_clock::now() - start > std::chrono::nanoseconds(budget_ns_)) break;
      cpu_pause();
    }
    return false;
  }

 private:
  int64_t budget_ns_ = -1;
  long involuntary_switches_ = 0;
};

thread_local Poller poller;

class ThreadPool {
 public:
  explicit ThreadPool(int threads) : size_(std::max(1, threads)) {
    for (int i = 1; i < size_; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      generation_.fetch_add(1);
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
      busy_workers_.store(static_cast<int>(workers_.size()));
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    work();
    const auto all_done = [this] { return busy_workers_.load() == 0; };
    if (!poller.poll(all_done)) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, all_done);
    }
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
      const auto new_job = [&] { return generation_.load() != seen; };
      if (!poller.poll(new_job)) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, new_job);
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);  // the job's fields were written under it
        seen = generation_.load();
        if (stopping_) return;
      }
      work();
      if (busy_workers_.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);  // the caller may be between its check and its wait
        done_.notify_one();
      }
    }
  }

  const int size_;
  std::vector<std::thread> workers_;
  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::atomic<uint64_t> generation_{0};
  bool stopping_ = false;
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int> busy_workers_{0};
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
