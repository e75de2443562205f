# node-gyp build of the same CPU addon that CMakeLists.txt builds (build/Release/bge_m3.node), for
# machines without CMake:  node-gyp rebuild
# package.json says "gypfile": false, so npm never runs this on its own; scripts/install.js
# (cmake-js) stays the default build.
#
# ONNX Runtime is found the way scripts/install.js finds it (scripts/ort-paths.js: ORT_ROOT, else
# system or .deps/ headers and onnxruntime-node's library). To point elsewhere, pass absolute paths:
#   node-gyp rebuild -- -Dort_include_dir=DIR -Dort_library=FILE -Dort_lib_dir=DIR
#
# gyp has no glob: the sources are the .cc files of native/base, kernels, weights, graph, core, index, train and binding,
# and native/kernels/cuda's stub (node-gyp builds no CUDA: the GPU kernels come with the CMake build),
# listed one by one; test/90.binding-gyp.test.ts fails when this list and the tree disagree.
{
  'variables': {
    # Empty means "resolve with scripts/ort-paths.js". gyp runs every <!(command) in a variables
    # block even when -D overrides it, so the commands sit in conditions below that only run
    # when no value was given (a copy of this folder without node_modules/.deps can still build).
    'ort_include_dir%': '',
    'ort_library%': '',
    'ort_lib_dir%': '',
  },
  'targets': [
    {
      'target_name': 'bge_m3',
      'variables': {
        'conditions': [
          ['ort_include_dir==""',
            {'ort_include': '<!(node scripts/ort-paths.js include)'},
            {'ort_include': '<(ort_include_dir)'}],
          ['ort_library==""',
            {'ort_lib': '<!(node scripts/ort-paths.js library)'},
            {'ort_lib': '<(ort_library)'}],
          ['ort_lib_dir==""',
            {'ort_rpath': '<!(node scripts/ort-paths.js libdir)'},
            {'ort_rpath': '<(ort_lib_dir)'}],
        ],
      },
      'sources': [
        'native/base/cpu_features.cc',
        'native/base/half.cc',
        'native/base/parallel_for.cc',
        'native/kernels/attention.cc',
        'native/kernels/attention_avx2.cc',
        'native/kernels/attention_avx512.cc',
        'native/kernels/attention_bf16.cc',
        'native/kernels/dense_dot.cc',
        'native/kernels/linear_bf16.cc',
        'native/kernels/linear_bf16_avx512.cc',
        'native/kernels/linear_f32.cc',
        'native/kernels/linear_f32_avx2.cc',
        'native/kernels/linear_f32_avx512.cc',
        'native/kernels/linear_f32_serial.cc',
        'native/kernels/maxsim.cc',
        'native/kernels/maxsim_avx2.cc',
        'native/kernels/maxsim_avx512.cc',
        'native/kernels/maxsim_serial.cc',
        'native/kernels/peak_probe.cc',
        'native/kernels/quantize.cc',
        'native/kernels/sparse_dot.cc',
        'native/kernels/sparse_dot_avx2.cc',
        'native/kernels/sparse_dot_avx512.cc',
        'native/kernels/sparse_dot_serial.cc',
        'native/weights/mini_json.cc',
        'native/weights/restricted_unpickler.cc',
        'native/weights/safetensors_reader.cc',
        'native/weights/tensor_file.cc',
        'native/weights/torch_pickle_reader.cc',
        'native/weights/zip_reader.cc',
        'native/graph/attention_fusion.cc',
        'native/graph/custom_ops.cc',
        'native/graph/fused_attention_op.cc',
        'native/graph/fp16_rewrite.cc',
        'native/graph/graph_facts.cc',
        'native/graph/linear_bf16_op.cc',
        'native/graph/linear_rewrite.cc',
        'native/graph/onnx_wire.cc',
        'native/core/encode_request.cc',
        'native/core/encode_result.cc',
        'native/core/encoder.cc',
        'native/core/encoder_session.cc',
        'native/core/heads.cc',
        'native/core/heads_gpu.cc',
        'native/core/job_queue.cc',
        'native/core/m3_heads.cc',
        'native/core/model_files.cc',
        'native/core/ort_env.cc',
        'native/core/ort_values.cc',
        'native/core/pooling.cc',
        'native/core/provider_cuda.cc',
        'native/core/providers.cc',
        'native/index/dir_lock.cc',
        'native/index/hybrid_index.cc',
        'native/train/head_trainer.cc',
        'native/train/m3_loss.cc',
        'native/kernels/cuda/cuda_device_stub.cc',
        'native/kernels/cuda/heads_cuda_stub.cc',
        'native/kernels/cuda/maxsim_cuda_stub.cc',
        'native/binding/addon.cc',
        'native/binding/encoder_wrap.cc',
        'native/binding/index_wrap.cc',
        'native/binding/js_values.cc',
        'native/binding/linear_wrap.cc',
        'native/binding/maxsim_wrap.cc',
        'native/binding/promise_worker.cc',
        'native/binding/sparse_wrap.cc',
        'native/binding/train_wrap.cc',
      ],
      'include_dirs': [
        'native',
        "<!(node -p \"require('node-addon-api').include_dir\")",
        '<(ort_include)',
      ],
      'defines': [
        'NAPI_VERSION=9',
        'NAPI_CPP_EXCEPTIONS',
        'NODE_ADDON_API_DISABLE_DEPRECATED',
        # A terminating worker cannot take a JS exception; without this node-addon-api rethrows
        # and the process aborts.
        'NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS',
      ],
      # node's common.gypi turns off exceptions and RTTI; the core reports errors by throwing and
      # node-addon-api maps them to JS errors (NAPI_CPP_EXCEPTIONS), and the CMake build has both.
      'cflags!': ['-fno-exceptions'],
      'cflags_cc!': ['-fno-exceptions', '-fno-rtti'],
      'cflags': ['-O3', '-Wall', '-Wextra', '-Wno-unused-parameter'],
      # gnu++17 is what CMake's CXX_STANDARD 17 gives; the last -std on the line wins, so this
      # also holds where a newer node's common.gypi asks for another standard.
      'cflags_cc': ['-std=gnu++17', '-fexceptions', '-frtti'],
      'configurations': {
        # CMake's Release defines NDEBUG; node's common.gypi does not.
        'Release': {'defines': ['NDEBUG']},
      },
      'libraries': ['<(ort_lib)', '-lpthread', '-ldl'],
      'conditions': [
        ['OS=="linux"', {
          # The rpath spares users LD_LIBRARY_PATH. Plain RPATH, not RUNPATH: RUNPATH would not be
          # searched for the runtime library's own dependencies.
          'ldflags': ['-Wl,-rpath,<(ort_rpath)', '-Wl,--disable-new-dtags'],
        }],
      ],
    },
  ],
}
