// One persistent pool per process, shared by every Session. The caller works too; idle
// workers spin briefly, then park on a condition variable. Several callers may run
// parallel_for at once (jobs queue up). After fork() the child gets a fresh, lazily
// started pool (pthread_atfork), so a fork never hangs on a dead worker.
#pragma once
#include <cstdint>
#include <functional>

namespace ember {

// Number of threads the pool can use, the caller included (hardware concurrency, or
// EMBER_NUM_THREADS).
int thread_pool_size();

// Runs fn(begin, end) over [0, n), split into at most `max_threads` chunks of at least
// `grain` items. Exceptions thrown by fn are rethrown in the caller (the first one wins).
// Chunk boundaries depend on n, grain, max_threads and the pool size, never on timing.
void parallel_for(int64_t n, int64_t grain, int max_threads,
                  const std::function<void(int64_t, int64_t)>& fn);

}  // namespace ember
