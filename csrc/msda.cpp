// Multi-scale deformable attention: op schemas, input checks and the CPU kernels.
//
// The ops are prolab::ms_deform_attn and prolab::ms_deform_attn_backward; autograd and the
// fake (meta) kernels are registered from Python (csrc/extension.py), the CUDA kernels in
// msda_cuda.cu. Layouts are described in msda.h.
#include "msda.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <string>
#include <type_traits>
#include <vector>

namespace prolab::msda {
namespace {

constexpr const char* kOp = "prolab::ms_deform_attn: ";

// Error messages take numbers as strings (std::to_string) and never stream them: streaming
// an integer instantiates libstdc++'s num_put in this library, and where the compiler's
// libstdc++ is not the one loaded at run time that copy can segfault instead of raising
// (seen on a CUDA image, where TORCH_CHECK(false, n) in a torch load_inline probe crashed too).
std::string num(int64_t n) {
  return std::to_string(n);
}

std::string shape_of(const at::Tensor& tensor) {
  std::string shape = "[";
  for (int64_t d = 0; d < tensor.dim(); ++d) {
    shape += (d ? ", " : "") + num(tensor.size(d));
  }
  return shape + "]";
}

const char* dtype_of(const at::Tensor& tensor) {
  return c10::toString(tensor.scalar_type());
}

// The dtype, device and contiguity rules every tensor shares with `value`.
void check_like_value(const at::Tensor& tensor, const char* name, const at::Tensor& value) {
  TORCH_CHECK(
      tensor.scalar_type() == value.scalar_type(), kOp, name, " must have value's dtype ", dtype_of(value),
      ", got ", dtype_of(tensor));
  TORCH_CHECK(
      tensor.device() == value.device(), kOp, name, " must be on value's device ", value.device().str(),
      ", got ", tensor.device().str());
  TORCH_CHECK(tensor.is_contiguous(), kOp, name, " must be contiguous (call .contiguous())");
}

void check_index_tensor(const at::Tensor& tensor, const char* name, const at::Tensor& value) {
  TORCH_CHECK(tensor.scalar_type() == at::kLong, kOp, name, " must be int64, got ", dtype_of(tensor));
  TORCH_CHECK(
      tensor.device() == value.device(), kOp, name, " must be on value's device ", value.device().str(),
      ", got ", tensor.device().str());
  TORCH_CHECK(tensor.is_contiguous(), kOp, name, " must be contiguous (call .contiguous())");
}

}  // namespace

Sizes check_forward_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  TORCH_CHECK(
      value.dim() == 4, kOp, "value must be 4-D (N, S, heads, channels), got shape ", shape_of(value));
  TORCH_CHECK(
      at::isFloatingType(value.scalar_type()), kOp, "value must be a floating-point tensor, got ",
      dtype_of(value));
  TORCH_CHECK(value.is_contiguous(), kOp, "value must be contiguous (call .contiguous())");
  TORCH_CHECK(
      spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2 && spatial_shapes.size(0) > 0, kOp,
      "spatial_shapes must be (levels, 2) with levels >= 1, got shape ", shape_of(spatial_shapes));
  check_index_tensor(spatial_shapes, "spatial_shapes", value);
  const int64_t levels = spatial_shapes.size(0);
  TORCH_CHECK(
      level_start_index.dim() == 1 && level_start_index.size(0) == levels, kOp,
      "level_start_index must be (levels,) = (", num(levels), ",), got shape ", shape_of(level_start_index));
  check_index_tensor(level_start_index, "level_start_index", value);

  const Sizes s{
      value.size(0),
      value.size(1),
      value.size(2),
      value.size(3),
      sampling_locations.dim() == 6 ? sampling_locations.size(1) : 0,
      levels,
      sampling_locations.dim() == 6 ? sampling_locations.size(4) : 0};
  TORCH_CHECK(
      sampling_locations.dim() == 6 && sampling_locations.size(0) == s.batch &&
          sampling_locations.size(2) == s.heads && sampling_locations.size(3) == levels &&
          sampling_locations.size(5) == 2,
      kOp, "sampling_locations must be (N, queries, heads, levels, points, 2) = (", num(s.batch), ", Q, ",
      num(s.heads), ", ", num(levels), ", P, 2), got shape ", shape_of(sampling_locations));
  check_like_value(sampling_locations, "sampling_locations", value);
  TORCH_CHECK(
      attention_weights.sizes() == at::IntArrayRef({s.batch, s.queries, s.heads, levels, s.points}), kOp,
      "attention_weights must be (N, queries, heads, levels, points) = (", num(s.batch), ", ", num(s.queries),
      ", ", num(s.heads), ", ", num(levels), ", ", num(s.points), "), got shape ", shape_of(attention_weights));
  check_like_value(attention_weights, "attention_weights", value);
  return s;
}

Sizes check_backward_inputs(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const Sizes s =
      check_forward_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  TORCH_CHECK(
      grad_output.sizes() == at::IntArrayRef({s.batch, s.queries, s.heads * s.channels}), kOp,
      "grad_output must be (N, queries, heads * channels) = (", num(s.batch), ", ", num(s.queries), ", ",
      num(s.heads * s.channels), "), got shape ", shape_of(grad_output));
  check_like_value(grad_output, "grad_output", value);
  return s;
}

namespace {

// CPU-only rules: the dtypes the kernels are built for, and level metadata that agrees with
// value (cheap to read on the host; the CUDA path leaves it to the caller to avoid a sync).
void check_cpu_inputs(
    const Sizes& s, const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index) {
  TORCH_CHECK(
      value.scalar_type() == at::kFloat || value.scalar_type() == at::kDouble, kOp,
      "the CPU kernel supports float32 and float64, value is ", dtype_of(value));
  const int64_t* shapes = spatial_shapes.const_data_ptr<int64_t>();
  const int64_t* starts = level_start_index.const_data_ptr<int64_t>();
  int64_t total = 0;
  for (int64_t l = 0; l < s.levels; ++l) {
    TORCH_CHECK(
        shapes[2 * l] > 0 && shapes[2 * l + 1] > 0, kOp, "spatial_shapes[", num(l), "] must be positive, got (",
        num(shapes[2 * l]), ", ", num(shapes[2 * l + 1]), ")");
    TORCH_CHECK(
        starts[l] == total, kOp, "level_start_index[", num(l), "] must be ", num(total),
        " (the rows of the levels before it), got ", num(starts[l]));
    total += shapes[2 * l] * shapes[2 * l + 1];
  }
  TORCH_CHECK(
      total == s.values, kOp, "spatial_shapes cover ", num(total), " rows but value has S = ", num(s.values));
}

// Items per at::parallel_for chunk so that a chunk holds at least ATen's usual grain of
// 32768 multiply-adds: small problems then stay on one thread.
int64_t grain_for(int64_t work_per_item) {
  constexpr int64_t kGrainWork = 32768;
  return std::max<int64_t>(1, kGrainWork / std::max<int64_t>(1, work_per_item));
}

// y += a * x over one head's channels. kChannels > 0 fixes the count at compile time so the
// loop unrolls into whole vectors; `omp simd` lets the compiler vectorise without proving
// that y and x do not overlap (they never do: value and its gradient are separate tensors).
template <typename scalar_t, int64_t kChannels>
inline void axpy(scalar_t* y, const scalar_t* x, scalar_t a, int64_t channels) {
  const int64_t count = kChannels > 0 ? kChannels : channels;
#pragma omp simd
  for (int64_t c = 0; c < count; ++c) {
    y[c] += a * x[c];
  }
}

// <x, y> over one head's channels; `reduction` allows the reassociation that vectorises it.
template <typename scalar_t, int64_t kChannels>
inline scalar_t dot(const scalar_t* x, const scalar_t* y, int64_t channels) {
  const int64_t count = kChannels > 0 ? kChannels : channels;
  scalar_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < count; ++c) {
    sum += x[c] * y[c];
  }
  return sum;
}

// Calls f(std::integral_constant<int64_t, C>) with C = channels for the head sizes that
// deformable attention uses (ViT-Adapter: 16 tiny, 24 small, 32 base, 64 large), else C = 0.
template <typename F>
void with_channels(int64_t channels, const F& f) {
  switch (channels) {
    case 8: return f(std::integral_constant<int64_t, 8>{});
    case 16: return f(std::integral_constant<int64_t, 16>{});
    case 24: return f(std::integral_constant<int64_t, 24>{});
    case 32: return f(std::integral_constant<int64_t, 32>{});
    case 64: return f(std::integral_constant<int64_t, 64>{});
    default: return f(std::integral_constant<int64_t, 0>{});
  }
}

// The sampling points of one (batch, query, head), resolved to corners up front so that their
// rows of value (scattered over the maps, often cache misses) are prefetched together before
// any is used: on large maps the kernels wait on those loads more than they compute.
template <typename scalar_t>
struct Sample {
  Bilinear<scalar_t> b;
  int64_t level_row;  // first row of the sample's level in value
  int64_t lp;         // level * points + point
};

// Fills `out` with the samples that touch the map, calling prefetch(offset) with the element
// offset of each of their corner rows relative to the head's first row; returns how many.
template <typename scalar_t, typename Prefetch>
int64_t resolve_samples(
    const Sizes& s,
    const int64_t* shapes,
    const int64_t* starts,
    const scalar_t* loc,
    int64_t row,
    const Prefetch& prefetch,
    std::vector<Sample<scalar_t>>& out) {
  int64_t count = 0;
  for (int64_t l = 0; l < s.levels; ++l) {
    for (int64_t p = 0; p < s.points; ++p) {
      const int64_t lp = l * s.points + p;
      Sample<scalar_t>& sample = out[count];
      if (!bilinear_corners(loc[2 * lp], loc[2 * lp + 1], shapes[2 * l], shapes[2 * l + 1], sample.b)) {
        continue;  // no corner on the map: contributes nothing, all its gradients stay zero
      }
      sample.level_row = starts[l];
      sample.lp = lp;
      for (int k = 0; k < 4; ++k) {
        if (sample.b.valid[k]) {
          prefetch((starts[l] + sample.b.index[k]) * row);
        }
      }
      ++count;
    }
  }
  return count;
}

// Parallel over (batch, query): each task writes its own output rows. With the channel count
// fixed at compile time the sum stays in registers.
template <typename scalar_t, int64_t kChannels>
void forward_cpu_kernel(
    const Sizes& s,
    const scalar_t* value,
    const int64_t* shapes,
    const int64_t* starts,
    const scalar_t* locations,
    const scalar_t* weights,
    scalar_t* output) {
  const int64_t channels = s.channels;
  const int64_t row = s.heads * channels;  // stride of one spatial position in value
  const int64_t samples = s.levels * s.points;
  const int64_t grain = grain_for(s.heads * samples * 4 * channels);
  at::parallel_for(0, s.batch * s.queries, grain, [&](int64_t begin, int64_t end) {
    std::vector<Sample<scalar_t>> resolved(samples);
    for (int64_t nq = begin; nq < end; ++nq) {
      const scalar_t* value_n = value + (nq / s.queries) * s.values * row;
      for (int64_t m = 0; m < s.heads; ++m) {
        const int64_t nqm = nq * s.heads + m;
        const scalar_t* value_m = value_n + m * channels;
        const scalar_t* attn = weights + nqm * samples;
        const auto prefetch = [value_m](int64_t offset) { __builtin_prefetch(value_m + offset); };
        const int64_t count =
            resolve_samples(s, shapes, starts, locations + nqm * samples * 2, row, prefetch, resolved);
        scalar_t* out = output + nqm * channels;
        std::array<scalar_t, (kChannels > 0 ? kChannels : 1)> sum{};
        scalar_t* acc = kChannels > 0 ? sum.data() : out;  // out is zero-filled
        for (int64_t i = 0; i < count; ++i) {
          const Sample<scalar_t>& sample = resolved[i];
          const scalar_t* value_l = value_m + sample.level_row * row;
          for (int k = 0; k < 4; ++k) {
            if (sample.b.valid[k]) {
              const scalar_t weight = attn[sample.lp] * sample.b.weight(k);
              axpy<scalar_t, kChannels>(acc, value_l + sample.b.index[k] * row, weight, channels);
            }
          }
        }
        if constexpr (kChannels > 0) {
          std::copy(sum.begin(), sum.end(), out);
        }
      }
    }
  });
}

// Parallel over (batch, head): each task owns grad_value[n, :, m, :], so the scatter into it
// needs no atomics, and every (query, level, point) gradient is written by one task.
template <typename scalar_t, int64_t kChannels>
void backward_cpu_kernel(
    const Sizes& s,
    const scalar_t* grad_output,
    const scalar_t* value,
    const int64_t* shapes,
    const int64_t* starts,
    const scalar_t* locations,
    const scalar_t* weights,
    scalar_t* grad_value,
    scalar_t* grad_locations,
    scalar_t* grad_weights) {
  const int64_t channels = s.channels;
  const int64_t row = s.heads * channels;
  const int64_t samples = s.levels * s.points;
  const int64_t grain = grain_for(s.queries * samples * 8 * channels);
  at::parallel_for(0, s.batch * s.heads, grain, [&](int64_t begin, int64_t end) {
    std::vector<Sample<scalar_t>> resolved(samples);
    for (int64_t nm = begin; nm < end; ++nm) {
      const int64_t n = nm / s.heads;
      const int64_t m = nm % s.heads;
      const int64_t head_offset = n * s.values * row + m * channels;
      const scalar_t* value_m = value + head_offset;
      scalar_t* grad_value_m = grad_value + head_offset;
      const auto prefetch = [value_m, grad_value_m](int64_t offset) {
        __builtin_prefetch(value_m + offset);
        __builtin_prefetch(grad_value_m + offset, 1);
      };
      for (int64_t q = 0; q < s.queries; ++q) {
        const int64_t nqm = (n * s.queries + q) * s.heads + m;
        const scalar_t* grad_out = grad_output + nqm * channels;
        const scalar_t* attn = weights + nqm * samples;
        scalar_t* grad_loc = grad_locations + nqm * samples * 2;
        scalar_t* grad_attn = grad_weights + nqm * samples;
        const int64_t count =
            resolve_samples(s, shapes, starts, locations + nqm * samples * 2, row, prefetch, resolved);
        for (int64_t i = 0; i < count; ++i) {
          const Sample<scalar_t>& sample = resolved[i];
          const Bilinear<scalar_t>& b = sample.b;
          const scalar_t a = attn[sample.lp];
          const int64_t level_offset = sample.level_row * row;
          // dot[k] = <grad_out, value at corner k>: the only reductions over channels.
          scalar_t dot_k[4] = {0, 0, 0, 0};
          for (int k = 0; k < 4; ++k) {
            if (b.valid[k]) {
              const int64_t offset = level_offset + b.index[k] * row;
              dot_k[k] = dot<scalar_t, kChannels>(grad_out, value_m + offset, channels);
              axpy<scalar_t, kChannels>(grad_value_m + offset, grad_out, a * b.weight(k), channels);
            }
          }
          const int64_t h = shapes[2 * (sample.lp / s.points)];
          const int64_t w = shapes[2 * (sample.lp / s.points) + 1];
          grad_attn[sample.lp] =
              b.weight(0) * dot_k[0] + b.weight(1) * dot_k[1] + b.weight(2) * dot_k[2] + b.weight(3) * dot_k[3];
          grad_loc[2 * sample.lp] =
              a * static_cast<scalar_t>(w) * (b.hy * (dot_k[1] - dot_k[0]) + b.ly * (dot_k[3] - dot_k[2]));
          grad_loc[2 * sample.lp + 1] =
              a * static_cast<scalar_t>(h) * (b.hx * (dot_k[2] - dot_k[0]) + b.lx * (dot_k[3] - dot_k[1]));
        }
      }
    }
  });
}

at::Tensor ms_deform_attn_cpu(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const Sizes s =
      check_forward_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_cpu_inputs(s, value, spatial_shapes, level_start_index);
  at::Tensor output = at::zeros({s.batch, s.queries, s.heads * s.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu", [&] {
    with_channels(s.channels, [&](auto channels) {
      forward_cpu_kernel<scalar_t, decltype(channels)::value>(
          s, value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
          level_start_index.const_data_ptr<int64_t>(), sampling_locations.const_data_ptr<scalar_t>(),
          attention_weights.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>());
    });
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const Sizes s = check_backward_inputs(
      grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_cpu_inputs(s, value, spatial_shapes, level_start_index);
  at::Tensor grad_value = at::zeros_like(value);
  at::Tensor grad_locations = at::zeros_like(sampling_locations);
  at::Tensor grad_weights = at::zeros_like(attention_weights);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    with_channels(s.channels, [&](auto channels) {
      backward_cpu_kernel<scalar_t, decltype(channels)::value>(
          s, grad_output.const_data_ptr<scalar_t>(), value.const_data_ptr<scalar_t>(),
          spatial_shapes.const_data_ptr<int64_t>(), level_start_index.const_data_ptr<int64_t>(),
          sampling_locations.const_data_ptr<scalar_t>(), attention_weights.const_data_ptr<scalar_t>(),
          grad_value.mutable_data_ptr<scalar_t>(), grad_locations.mutable_data_ptr<scalar_t>(),
          grad_weights.mutable_data_ptr<scalar_t>());
    });
  });
  return {grad_value, grad_locations, grad_weights};
}

}  // namespace
}  // namespace prolab::msda

TORCH_LIBRARY(prolab, m) {
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(prolab, CPU, m) {
  m.impl("ms_deform_attn", &prolab::msda::ms_deform_attn_cpu);
  m.impl("ms_deform_attn_backward", &prolab::msda::ms_deform_attn_backward_cpu);
}
