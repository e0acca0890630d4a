// Process-wide pool: a queue of jobs, each cut into a fixed number of chunks that any thread
// (workers and the caller) claims with an atomic counter. Workers spin 2 ms (EMBER_SPIN_US)
// after their last job before parking on a condition variable: a model's single-threaded
// nodes and the caller's work between runs last 50 µs and more, and a parked worker takes
// 0.1-0.2 ms to wake on a VM (more when the host is busy), so with a 50 µs spin the worker
// joined most parallel nodes of a ResNet-18 run late (~20 parks per run; run median 20-24
// ms, 2 ms spin: 19-21 ms, four interleaved rounds of 80 runs).
#include "ember/thread_pool.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

namespace ember {
namespace {

struct Job {
  int64_t n = 0;
  int chunks = 0;
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  std::atomic<int> next{0};
  std::atomic<int> done{0};
  std::atomic<int> active{0};  // workers holding a pointer to this job
  std::mutex mu;
  std::condition_variable cv;
  std::exception_ptr error;

  // Claims and runs chunks until none are left; returns when this thread can claim no more.
  void work() {
    for (int c; (c = next.fetch_add(1)) < chunks;) {
      int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
      try {
        (*fn)(begin, end);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
      }
      if (done.fetch_add(1) + 1 == chunks) {
        std::lock_guard<std::mutex> lock(mu);
        cv.notify_all();
      }
    }
  }
};

class Pool {
 public:
  Pool() {
    int n = (int)std::thread::hardware_concurrency();
    if (const char* env = std::getenv("EMBER_NUM_THREADS")) n = std::atoi(env);
    size_ = std::max(1, n);
    if (const char* env = std::getenv("EMBER_SPIN_US")) spin_us_ = std::max(0, std::atoi(env));
  }

  int size() const { return size_; }

  void run(Job* job) {
    start_workers();
    {
      std::lock_guard<std::mutex> lock(*mu_);
      jobs_.push_back(job);
      epoch_.fetch_add(1);
    }
    cv_->notify_all();
    job->work();
    {
      std::lock_guard<std::mutex> lock(*mu_);
      jobs_.erase(std::find(jobs_.begin(), jobs_.end(), job));
    }
    // Wait for chunks other threads still run, and for them to let go of the job.
    for (int spin = 0; job->done.load() < job->chunks || job->active.load() > 0; spin++) {
      if (spin < 2000) {
        std::this_thread::yield();
      } else {
        std::unique_lock<std::mutex> lock(job->mu);
        job->cv.wait_for(lock, std::chrono::microseconds(200));
      }
    }
    // The last worker releases job->mu after its decrement: wait for that before the job dies.
    std::lock_guard<std::mutex> lock(job->mu);
  }

  // After fork the child has no workers: forget them (they cannot be joined) and start anew.
  void reset_after_fork() {
    mu_ = new std::mutex();
    cv_ = new std::condition_variable();
    new (&jobs_) std::deque<Job*>();
    started_ = false;
  }
  void lock_for_fork() { mu_->lock(); }
  void unlock_after_fork() { mu_->unlock(); }

 private:
  void start_workers() {
    std::lock_guard<std::mutex> lock(*mu_);
    if (started_) return;
    started_ = true;
    for (int i = 1; i < size_; i++) std::thread([this] { worker_loop(); }).detach();
  }

  Job* take_job() {  // under mu_
    for (Job* j : jobs_) {
      if (j->next.load() < j->chunks) {
        j->active.fetch_add(1);
        return j;
      }
    }
    return nullptr;
  }

  void worker_loop() {
    std::mutex* mu = mu_;
    std::condition_variable* cv = cv_;
    for (;;) {
      Job* job;
      {
        std::unique_lock<std::mutex> lock(*mu);
        job = take_job();
      }
      if (job) {
        job->work();
        std::lock_guard<std::mutex> lock(job->mu);
        job->active.fetch_sub(1);
        job->cv.notify_all();
        continue;
      }
      // Spin briefly: a model runs many small ops back to back.
      uint64_t seen = epoch_.load();
      auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
      while (epoch_.load() == seen && std::chrono::steady_clock::now() < until) {
        std::this_thread::yield();
      }
      if (epoch_.load() != seen) continue;
      std::unique_lock<std::mutex> lock(*mu);
      cv->wait(lock, [&] {
        for (Job* j : jobs_) if (j->next.load() < j->chunks) return true;
        return false;
      });
    }
  }

  int size_ = 1;
  int spin_us_ = 2000;  // idle spin before parking
  std::mutex* mu_ = new std::mutex();  // pointers: replaced, never freed, after fork
  std::condition_variable* cv_ = new std::condition_variable();
  std::deque<Job*> jobs_;
  std::atomic<uint64_t> epoch_{0};
  bool started_ = false;
};

Pool* g_pool = nullptr;
std::once_flag g_pool_once;

Pool& pool() {
  std::call_once(g_pool_once, [] {
    g_pool = new Pool();  // leaked on purpose: workers may outlive static destructors
    pthread_atfork([] { g_pool->lock_for_fork(); }, [] { g_pool->unlock_after_fork(); },
                   [] { g_pool->reset_after_fork(); });
  });
  return *g_pool;
}

}  // namespace

int thread_pool_size() { return pool().size(); }

void parallel_for(int64_t n, int64_t grain, int max_threads,
                  const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t by_grain = std::max<int64_t>(1, n / grain);  // every chunk holds >= grain items
  int threads = std::min<int64_t>({(int64_t)std::max(max_threads, 1), by_grain,
                                   (int64_t)pool().size()});
  if (threads <= 1) {
    fn(0, n);
    return;
  }
  Job job;
  job.n = n;
  job.chunks = threads;
  job.fn = &fn;
  pool().run(&job);
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace ember
