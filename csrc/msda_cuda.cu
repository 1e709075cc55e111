// Multi-scale deformable attention: the CUDA kernels (float64, float32, float16, bfloat16;
// the half types accumulate in float). Schemas and input checks live in msda.cpp, layouts
// in msda.h.
#include "msda.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace prolab::msda {
namespace {

constexpr const char* kOp = "prolab::ms_deform_attn: ";
constexpr int kThreadsPerBlock = 256;

void check_cuda_dtype(const at::Tensor& value) {
  const auto dtype = value.scalar_type();
  TORCH_CHECK(
      dtype == at::kDouble || dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, kOp,
      "the CUDA kernel supports float64, float32, float16 and bfloat16, value is ", c10::toString(dtype));
}

int64_t blocks_for(int64_t threads) {
  return (threads + kThreadsPerBlock - 1) / kThreadsPerBlock;
}

// One thread per output element (n, q, m, c): the threads of one (n, q, m) read consecutive
// channels at each corner, so the value loads coalesce.
template <typename scalar_t>
__global__ void forward_kernel(
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts,
    const scalar_t* __restrict__ locations,
    const scalar_t* __restrict__ weights,
    scalar_t* __restrict__ output,
    Sizes s,
    int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (index >= total) {
    return;
  }
  const int64_t c = index % s.channels;
  const int64_t nqm = index / s.channels;  // ((n * Q) + q) * M + m
  const int64_t m = nqm % s.heads;
  const int64_t n = nqm / (s.heads * s.queries);
  const int64_t row = s.heads * s.channels;
  const int64_t samples = s.levels * s.points;
  const scalar_t* value_c = value + n * s.values * row + m * s.channels + c;
  const scalar_t* loc = locations + nqm * samples * 2;
  const scalar_t* attn = weights + nqm * samples;
  acc_t acc = 0;
  for (int64_t l = 0; l < s.levels; ++l) {
    const int64_t h = shapes[2 * l];
    const int64_t w = shapes[2 * l + 1];
    const scalar_t* value_l = value_c + starts[l] * row;
    for (int64_t p = 0; p < s.points; ++p) {
      const int64_t lp = l * s.points + p;
      Bilinear<acc_t> b;
      if (!bilinear_corners<acc_t>(
              static_cast<acc_t>(loc[2 * lp]), static_cast<acc_t>(loc[2 * lp + 1]), h, w, b)) {
        continue;
      }
      acc_t sampled = 0;
      for (int k = 0; k < 4; ++k) {
        if (b.valid[k]) {
          sampled += b.weight(k) * static_cast<acc_t>(value_l[b.index[k] * row]);
        }
      }
      acc += static_cast<acc_t>(attn[lp]) * sampled;
    }
  }
  output[index] = static_cast<scalar_t>(acc);
}

// A group of `lanes` threads (a power of two <= 32, so a group never straddles a warp) per
// (n, q, m); lane j handles channels j, j + lanes, ... grad_value is scattered with atomicAdd
// into opmath-typed memory. The location and weight gradients of a sample are sums over
// channels: reduced with shuffles inside the group and written by its first lane, so they
// need neither atomics nor zero-filling.
template <typename scalar_t>
__global__ void backward_kernel(
    const scalar_t* __restrict__ grad_output,
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts,
    const scalar_t* __restrict__ locations,
    const scalar_t* __restrict__ weights,
    at::opmath_type<scalar_t>* __restrict__ grad_value,
    scalar_t* __restrict__ grad_locations,
    scalar_t* __restrict__ grad_weights,
    Sizes s,
    int64_t groups,
    int lanes) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t thread = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int lane = static_cast<int>(thread % lanes);
  // Threads past the last group stay to the end: every lane of a warp joins the shuffles.
  const bool active = thread / lanes < groups;
  const int64_t nqm = active ? thread / lanes : 0;
  const int64_t m = nqm % s.heads;
  const int64_t n = nqm / (s.heads * s.queries);
  const int64_t row = s.heads * s.channels;
  const int64_t samples = s.levels * s.points;
  const int64_t head_offset = n * s.values * row + m * s.channels;
  const scalar_t* grad_out = grad_output + nqm * s.channels;
  const scalar_t* loc = locations + nqm * samples * 2;
  const scalar_t* attn = weights + nqm * samples;
  for (int64_t l = 0; l < s.levels; ++l) {
    const int64_t h = shapes[2 * l];
    const int64_t w = shapes[2 * l + 1];
    const scalar_t* value_l = value + head_offset + starts[l] * row;
    acc_t* grad_value_l = grad_value + head_offset + starts[l] * row;
    for (int64_t p = 0; p < s.points; ++p) {
      const int64_t lp = l * s.points + p;
      const acc_t a = static_cast<acc_t>(attn[lp]);
      acc_t grad_a = 0, grad_x = 0, grad_y = 0;
      Bilinear<acc_t> b;
      if (active &&
          bilinear_corners<acc_t>(static_cast<acc_t>(loc[2 * lp]), static_cast<acc_t>(loc[2 * lp + 1]), h, w, b)) {
        for (int64_t c = lane; c < s.channels; c += lanes) {
          const acc_t go = static_cast<acc_t>(grad_out[c]);
          acc_t v[4];
          for (int k = 0; k < 4; ++k) {
            v[k] = b.valid[k] ? static_cast<acc_t>(value_l[b.index[k] * row + c]) : acc_t(0);
          }
          grad_a += go * (b.weight(0) * v[0] + b.weight(1) * v[1] + b.weight(2) * v[2] + b.weight(3) * v[3]);
          grad_x += go * (b.hy * (v[1] - v[0]) + b.ly * (v[3] - v[2]));
          grad_y += go * (b.hx * (v[2] - v[0]) + b.lx * (v[3] - v[1]));
          const acc_t scaled = a * go;
          for (int k = 0; k < 4; ++k) {
            if (b.valid[k]) {
              atomicAdd(grad_value_l + b.index[k] * row + c, scaled * b.weight(k));
            }
          }
        }
      }
      for (int offset = lanes / 2; offset > 0; offset /= 2) {
        grad_a += __shfl_xor_sync(0xffffffff, grad_a, offset, lanes);
        grad_x += __shfl_xor_sync(0xffffffff, grad_x, offset, lanes);
        grad_y += __shfl_xor_sync(0xffffffff, grad_y, offset, lanes);
      }
      if (active && lane == 0) {
        scalar_t* grad_loc = grad_locations + (nqm * samples + lp) * 2;
        grad_weights[nqm * samples + lp] = static_cast<scalar_t>(grad_a);
        grad_loc[0] = static_cast<scalar_t>(a * static_cast<acc_t>(w) * grad_x);
        grad_loc[1] = static_cast<scalar_t>(a * static_cast<acc_t>(h) * grad_y);
      }
    }
  }
}

at::Tensor ms_deform_attn_cuda(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const Sizes s =
      check_forward_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_cuda_dtype(value);
  const c10::cuda::CUDAGuard guard(value.device());
  at::Tensor output = at::empty({s.batch, s.queries, s.heads * s.channels}, value.options());
  const int64_t total = output.numel();
  if (total == 0) {
    return output;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda", [&] {
    forward_kernel<scalar_t><<<blocks_for(total), kThreadsPerBlock, 0, at::cuda::getCurrentCUDAStream()>>>(
        value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
        level_start_index.const_data_ptr<int64_t>(), sampling_locations.const_data_ptr<scalar_t>(),
        attention_weights.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(), s, total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const Sizes s = check_backward_inputs(
      grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_cuda_dtype(value);
  const c10::cuda::CUDAGuard guard(value.device());
  // Atomics into float16/bfloat16 would be slow and lossy: scatter into opmath memory.
  at::Tensor grad_value_acc = at::zeros(value.sizes(), value.options().dtype(at::toOpMathType(value.scalar_type())));
  at::Tensor grad_locations = at::empty_like(sampling_locations);
  at::Tensor grad_weights = at::empty_like(attention_weights);
  int lanes = 1;
  while (lanes < s.channels && lanes < 32) {
    lanes *= 2;
  }
  const int64_t groups = s.batch * s.queries * s.heads;
  if (groups > 0) {  // else every output is empty
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
          backward_kernel<scalar_t>
              <<<blocks_for(groups * lanes), kThreadsPerBlock, 0, at::cuda::getCurrentCUDAStream()>>>(
                  grad_output.const_data_ptr<scalar_t>(), value.const_data_ptr<scalar_t>(),
                  spatial_shapes.const_data_ptr<int64_t>(), level_start_index.const_data_ptr<int64_t>(),
                  sampling_locations.const_data_ptr<scalar_t>(), attention_weights.const_data_ptr<scalar_t>(),
                  grad_value_acc.mutable_data_ptr<at::opmath_type<scalar_t>>(),
                  grad_locations.mutable_data_ptr<scalar_t>(), grad_weights.mutable_data_ptr<scalar_t>(), s, groups,
                  lanes);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }
  return {grad_value_acc.to(value.scalar_type()), grad_locations, grad_weights};
}

}  // namespace
}  // namespace prolab::msda

TORCH_LIBRARY_IMPL(prolab, CUDA, m) {
  m.impl("ms_deform_attn", &prolab::msda::ms_deform_attn_cuda);
  m.impl("ms_deform_attn_backward", &prolab::msda::ms_deform_attn_backward_cuda);
}
