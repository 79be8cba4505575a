{
  "variables": {
    # CUDA sources are compiled whenever nvcc exists, unless TERNLAB_CUDA=0 (see native/cuda/).
    "with_cuda%": "<!(node native/cuda/find-cuda.js enabled)",
    "cuda_home%": "<!(node native/cuda/find-cuda.js home)"
  },
  "targets": [
    {
      "target_name": "ternlab",
      "sources": [
        "native/core/model.cpp",
        "native/core/train.cpp",
        "native/cpu/thread_pool.cpp",
        "native/cpu/gemm.cpp",
        "native/cpu/cpu_backend.cpp",
        "native/napi/addon.cpp",
        "native/napi/ops.cpp"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fexceptions", "-Wno-psabi", "-Wall", "-Wno-unused-parameter"],
      "conditions": [
        ["with_cuda==1", {
          "defines": ["TERNLAB_WITH_CUDA=1"],
          "sources": ["<!@(ls -1 native/cuda/*.cu 2>/dev/null || true)"],
          "include_dirs": ["<(cuda_home)/include"],
          "libraries": ["-L<(cuda_home)/lib64", "-L<(cuda_home)/lib", "-Wl,-rpath,'$$ORIGIN'", "-l:libcudart_static.a", "-ldl", "-lrt", "-lpthread"],
          "rules": [{
            "rule_name": "nvcc",
            "extension": "cu",
            "inputs": ["native/core/discrete.h", "native/core/philox.h", "native/core/backend.h", "native/core/loss.h", "native/core/reduce.h", "native/cuda/stem.h", "<!@(ls -1 native/cuda/*.cuh 2>/dev/null || true)"],
            "outputs": ["<(INTERMEDIATE_DIR)/<(RULE_INPUT_ROOT).o"],
            "action": ["<(cuda_home)/bin/nvcc", "-std=c++17", "-O3", "-Xcompiler", "-fPIC",
                       "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
                       "-gencode", "arch=compute_90,code=compute_90",
                       "-c", "<(RULE_INPUT_PATH)", "-o", "<(INTERMEDIATE_DIR)/<(RULE_INPUT_ROOT).o"],
            "message": "nvcc <(RULE_INPUT_PATH)",
            "process_outputs_as_sources": 1
          }]
        }, {
          "sources": ["native/cuda/cuda_unavailable.cpp"]
        }]
      ]
    }
  ]
}
