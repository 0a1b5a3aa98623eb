#include "engine/memory.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "engine/errors.h"

namespace diffuse {
namespace {

// The first number in a file ("max" and unreadable files give nothing).
bool read_number(const std::string& path, uint64_t& out) {
  std::ifstream f(path);
  std::string word;
  if (!(f >> word) || word.empty() || word[0] < '0' || word[0] > '9') return false;
  out = std::strtoull(word.c_str(), nullptr, 10);
  return true;
}

bool meminfo_available(uint64_t& out) {
  std::ifstream f("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (f >> key >> kb) {
    std::getline(f, unit);
    if (key == "MemAvailable:") {
      out = kb * 1024;
      return true;
    }
  }
  return false;
}

// This process's cgroup v2 directory, from the "0::/path" line of /proc/self/cgroup.
std::string cgroup_v2_dir() {
  std::ifstream f("/proc/self/cgroup");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("0::", 0) == 0) return "/sys/fs/cgroup" + line.substr(3);
  return "";
}

uint64_t resident_bytes() {
  std::ifstream f("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  f >> size >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

// "8G", "512M", "1048576": bytes, or false when malformed.
bool parse_bytes(const char* text, uint64_t& out) {
  char* end = nullptr;
  const double v = std::strtod(text, &end);
  if (end == text || !(v >= 0)) return false;
  double scale = 1;
  if (*end == 'K' || *end == 'k') scale = 1024.0, ++end;
  else if (*end == 'M' || *end == 'm') scale = 1024.0 * 1024, ++end;
  else if (*end == 'G' || *end == 'g') scale = 1024.0 * 1024 * 1024, ++end;
  if (*end == 'i' || *end == 'B') ++end;
  if (*end == 'B') ++end;
  if (*end != '\0') return false;
  out = static_cast<uint64_t>(v * scale);
  return true;
}

std::atomic<uint64_t> memory_limit{0};

void take(MemoryAvailable& m, uint64_t bytes, const std::string& source) {
  if (bytes < m.bytes) m.bytes = bytes, m.source = source;
}

}  // namespace

std::atomic<uint64_t>& reclaimable_bytes() {
  static std::atomic<uint64_t> bytes{0};
  return bytes;
}

MemoryAvailable available_memory() {
  MemoryAvailable m;
  uint64_t v = 0, limit = 0, usage = 0;
  if (meminfo_available(v)) take(m, v, "MemAvailable in /proc/meminfo");
  const std::string dir = cgroup_v2_dir();
  if (!dir.empty() && read_number(dir + "/memory.max", limit) && read_number(dir + "/memory.current", usage))
    take(m, limit > usage ? limit - usage : 0, "the cgroup's memory.max less its memory.current (" + dir + ")");
  else if (read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes", limit) &&
           read_number("/sys/fs/cgroup/memory/memory.usage_in_bytes", usage))
    take(m, limit > usage ? limit - usage : 0, "the cgroup's memory.limit_in_bytes less its usage");
  if (const uint64_t set = memory_limit.load()) {
    const uint64_t rss = resident_bytes();
    take(m, set > rss ? set - rss : 0, "the memory limit of " + gib(set) + " set for this process, less its " + gib(rss) + " resident");
  } else if (const char* env = std::getenv("DIFFUSE_MEMORY_LIMIT")) {
    if (!parse_bytes(env, limit))
      throw Error(ErrorCode::INVALID_ARGUMENT, std::string("DIFFUSE_MEMORY_LIMIT must be a byte count such as 8G or 512M, got '") + env + "'");
    const uint64_t rss = resident_bytes();
    take(m, limit > rss ? limit - rss : 0, "DIFFUSE_MEMORY_LIMIT=" + std::string(env) + " less this process's " + gib(rss) + " resident");
  }
  const uint64_t kept = reclaimable_bytes().load();
  if (kept > 0 && m.bytes != UINT64_MAX) m.bytes += kept, m.source += ", plus " + gib(kept) + " of freed buffers kept for reuse";
  return m;
}

void set_memory_limit(uint64_t bytes) { memory_limit.store(bytes); }

std::string gib(uint64_t bytes) {
  char buf[32];
  const double g = static_cast<double>(bytes) / (1024.0 * 1024 * 1024);
  if (g >= 1) std::snprintf(buf, sizeof buf, "%.1f GiB", g);
  else std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024));
  return buf;
}

void check_memory(uint64_t need, const std::string& what, const std::string& advice) {
  const MemoryAvailable m = available_memory();
  if (need <= m.bytes) return;
  throw Error(ErrorCode::OUT_OF_MEMORY, what + " needs " + gib(need) + " but " + gib(m.bytes) + " is available (" + m.source + "); " + advice);
}

}  // namespace diffuse
