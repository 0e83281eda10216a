# The CUDA build switch. Finds the CUDA toolkit (nvcc, cudart, cuBLAS/cuBLASLt), cuDNN and NCCL;
# option SX_CUDA defaults to ON when all of them are found. With SX_CUDA on: the CUDA language is
# enabled for sm_80 and sm_90 (A100, H100/H200; override with -DCMAKE_CUDA_ARCHITECTURES=...), and the
# targets CUDA::cudart, CUDA::cublas, CUDA::cublasLt, CUDNN::cudnn, NCCL::nccl exist. Off: one status
# line says what the build leaves out. Code tests SX_HAVE_CUDA (a public definition of sx_model).
list(APPEND CMAKE_MODULE_PATH ${CMAKE_CURRENT_LIST_DIR})
if(NOT CUDAToolkit_ROOT AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CUDAToolkit_ROOT /usr/local/cuda)
endif()
find_package(CUDAToolkit QUIET)
set(_sx_cuda_missing "")
if(CUDAToolkit_FOUND AND CUDAToolkit_NVCC_EXECUTABLE)
  find_package(CUDNN QUIET)
  find_package(NCCL QUIET)
  if(NOT CUDNN_FOUND)
    list(APPEND _sx_cuda_missing "cuDNN (cudnn.h, libcudnn)")
  endif()
  if(NOT NCCL_FOUND)
    list(APPEND _sx_cuda_missing "NCCL (nccl.h, libnccl)")
  endif()
else()
  list(APPEND _sx_cuda_missing "the CUDA toolkit (nvcc)")
endif()
if(_sx_cuda_missing)
  set(_sx_cuda_default OFF)
else()
  set(_sx_cuda_default ON)
endif()
option(SX_CUDA "Build the CUDA backend (cuDNN, cuBLAS) and the NCCL communicator" ${_sx_cuda_default})

if(SX_CUDA)
  if(_sx_cuda_missing)
    string(REPLACE ";" ", " _m "${_sx_cuda_missing}")
    message(FATAL_ERROR "SX_CUDA=ON but not found: ${_m}. Install them (CUDA toolkit with cuDNN and NCCL under "
                        "/usr/local/cuda, or set CUDAToolkit_ROOT / CUDNN_ROOT / NCCL_ROOT), or configure with -DSX_CUDA=OFF")
  endif()
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80 90)
  endif()
  set(CMAKE_CUDA_COMPILER ${CUDAToolkit_NVCC_EXECUTABLE})
  if(SX_CCACHE)
    set(CMAKE_CUDA_COMPILER_LAUNCHER ${CMAKE_CXX_COMPILER_LAUNCHER})
  endif()
  enable_language(CUDA)
  # CMake 3.25 knows no C++20 flag for nvcc (its table stops at 17); nvcc 13 takes -std=c++20.
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  message(STATUS "CUDA backend: ON (CUDA ${CUDAToolkit_VERSION}, cuDNN ${CUDNN_VERSION}, NCCL ${NCCL_VERSION}, "
                 "sm ${CMAKE_CUDA_ARCHITECTURES})")
elseif(_sx_cuda_missing)
  string(REPLACE ";" ", " _m "${_sx_cuda_missing}")
  message(STATUS "CUDA backend: OFF, not found: ${_m}. Left out: model/cuda (cuDNN/cuBLAS backend), the NCCL "
                 "communicator; device=cuda reports a CPU-only build")
else()
  message(STATUS "CUDA backend: OFF (-DSX_CUDA=OFF). Left out: model/cuda (cuDNN/cuBLAS backend), the NCCL "
                 "communicator; device=cuda reports a CPU-only build")
endif()
