// Compiled when the addon is built without nvcc (or with TERNLAB_CUDA=0): the CUDA backend's
// factory explains how to get it instead of failing obscurely.
#ifndef TERNLAB_WITH_CUDA  // with CUDA, cuda_backend.cu defines these
#include "../core/backend.h"

namespace tl {

bool cuda_compiled() { return false; }

Status make_cuda_backend(int, std::unique_ptr<Backend>*) {
  return Status(Code::Backend,
                "backend \"cuda\" is not available: this build of ternlab was compiled without nvcc (or with "
                "TERNLAB_CUDA=0). Install the CUDA toolkit and rebuild (npm rebuild ternlab), or use backend \"cpu\".");
}

}  // namespace tl
#endif  // TERNLAB_WITH_CUDA
