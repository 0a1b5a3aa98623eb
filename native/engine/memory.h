// Memory planning: how much this process can still allocate before the kernel's OOM killer
// steps in, and a typed OUT_OF_MEMORY error, raised before loading or stepping, that names
// what needed how much and what to try instead.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace diffuse {

struct MemoryAvailable {
  uint64_t bytes = UINT64_MAX;  // UINT64_MAX when nothing says
  std::string source;           // what set the figure, e.g. "MemAvailable in /proc/meminfo"
};

// The smallest of: MemAvailable (/proc/meminfo); the cgroup's limit less its usage (v2
// memory.max - memory.current, v1 memory.limit_in_bytes - memory.usage_in_bytes); and, when
// a limit is set (set_memory_limit, else DIFFUSE_MEMORY_LIMIT: bytes, K/M/G suffixes), that
// limit less this process's resident set, so a user can cap the engine and tests can inject
// a limit. Plus reclaimable_bytes().
MemoryAvailable available_memory();

// Bytes this process holds but gives back before it allocates anything new (the CPU backend's
// cache of freed activation blocks); available_memory() counts them as available.
std::atomic<uint64_t>& reclaimable_bytes();

// A cap on this process's memory for the planning above, in bytes; 0 removes it (then
// DIFFUSE_MEMORY_LIMIT applies, when set).
void set_memory_limit(uint64_t bytes);

// GiB with one decimal, for messages.
std::string gib(uint64_t bytes);

// Throws Error(OUT_OF_MEMORY) when `need` bytes exceed available_memory(): "<what> needs
// <need> but <available> is available (<source>); <advice>".
void check_memory(uint64_t need, const std::string& what, const std::string& advice);

}  // namespace diffuse
