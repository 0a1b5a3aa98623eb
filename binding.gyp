{
  # The CPU engine built with node-gyp: the path for prebuildify and for machines without
  # CMake. The CUDA backend is CMake-only (npm install uses cmake-js when CMake is present).
  # Kernel variants for an instruction set are compiled with its flags and picked at run time.
  "targets": [
    {
      "target_name": "diffuse_isa_avx2",
      "type": "static_library",
      "sources": ["<!@(node scripts/gyp-sources.mjs avx2)"],
      "include_dirs": ["native"],
      "cflags_cc": ["-std=c++17", "-O3", "-fPIC", "-fexceptions", "-mavx2", "-mfma", "-mf16c"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"]
    },
    {
      "target_name": "diffuse_isa_avx512",
      "type": "static_library",
      "sources": ["<!@(node scripts/gyp-sources.mjs avx512)"],
      "include_dirs": ["native"],
      "cflags_cc": ["-std=c++17", "-O3", "-fPIC", "-fexceptions", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma", "-mf16c"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"]
    },
    {
      "target_name": "diffuse",
      "sources": ["<!@(node scripts/gyp-sources.mjs base)"],
      "dependencies": ["diffuse_isa_avx2", "diffuse_isa_avx512"],
      "include_dirs": ["native", "<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=9", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-pthread"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "libraries": ["-ldl", "-lpthread"]
    }
  ]
}
