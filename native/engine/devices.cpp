#include "engine/devices.h"

#include <dlfcn.h>

#include <mutex>

#include "engine/errors.h"

namespace diffuse {
namespace {

// The C entry points the CUDA library exports (cuda/backend_cuda.cu).
using CreateFn = Backend* (*)(int device, char* error, size_t error_len);
using CountFn = int (*)(char* error, size_t error_len);
using NameFn = int (*)(int device, char* name, size_t len);

struct CudaLibrary {
  void* handle = nullptr;
  CreateFn create = nullptr;
  CountFn count = nullptr;
  NameFn device_name = nullptr;
  std::string path;
  std::string error;
};

std::string directory_of_this_library() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&directory_of_this_library), &info) == 0 || info.dli_fname == nullptr) return ".";
  std::string path = info.dli_fname;
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

CudaLibrary& cuda_library() {
  static CudaLibrary lib;
  static std::once_flag once;
  std::call_once(once, [] {
    lib.path = directory_of_this_library() + "/libdiffuse_cuda.so";
    lib.handle = dlopen(lib.path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib.handle) {
      const char* e = dlerror();
      lib.error = std::string("the CUDA backend library could not be loaded (") + (e ? e : lib.path) +
                  "); this build has no CUDA backend or the CUDA runtime is missing — reinstall on a machine with the CUDA toolkit, or use device 'cpu'";
      return;
    }
    lib.create = reinterpret_cast<CreateFn>(dlsym(lib.handle, "diffuse_cuda_create_backend"));
    lib.count = reinterpret_cast<CountFn>(dlsym(lib.handle, "diffuse_cuda_device_count"));
    lib.device_name = reinterpret_cast<NameFn>(dlsym(lib.handle, "diffuse_cuda_device_name"));
    if (!lib.create || !lib.count || !lib.device_name) lib.error = lib.path + " does not export the diffuse CUDA entry points; rebuild the package";
  });
  return lib;
}

}  // namespace

CudaStatus cuda_status() {
  CudaStatus s;
  CudaLibrary& lib = cuda_library();
  s.library = lib.path;
  if (!lib.error.empty()) {
    s.reason = lib.error;
    return s;
  }
  char err[512] = {0};
  const int n = lib.count(err, sizeof err);
  if (n <= 0) {
    s.reason = n < 0 ? std::string(err) : "no CUDA device is visible";
    return s;
  }
  for (int i = 0; i < n; ++i) {
    char name[256] = {0};
    lib.device_name(i, name, sizeof name);
    s.devices.push_back(name);
  }
  s.available = true;
  return s;
}

std::unique_ptr<Backend> make_backend(const std::string& device, int threads) {
  if (device == "cpu") return make_cpu_backend(threads);
  if (device.rfind("cuda", 0) == 0) {
    int index = 0;
    if (device.size() > 4) {
      require(device[4] == ':' && device.size() > 5 && device.find_first_not_of("0123456789", 5) == std::string::npos,
              "device '" + device + "' is not of the form cuda or cuda:N");
      index = std::stoi(device.substr(5));
    }
    const CudaStatus status = cuda_status();
    if (!status.available) throw Error(ErrorCode::UNSUPPORTED, "device '" + device + "' is not available: " + status.reason);
    if (index >= static_cast<int>(status.devices.size()))
      throw Error(ErrorCode::UNSUPPORTED, "device '" + device + "' does not exist; " + std::to_string(status.devices.size()) + " CUDA device(s) are visible");
    char err[512] = {0};
    Backend* be = cuda_library().create(index, err, sizeof err);
    if (!be) throw Error(ErrorCode::DEVICE, std::string("could not start the CUDA backend on ") + device + ": " + err);
    return std::unique_ptr<Backend>(be);
  }
  throw Error(ErrorCode::INVALID_ARGUMENT, "unknown device '" + device + "' (use 'cpu', 'cuda' or 'cuda:N')");
}

}  // namespace diffuse
