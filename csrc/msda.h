// Multi-scale deformable attention: what the CPU and CUDA kernels share.
//
// Layouts (the mmcv / Deformable-DETR ones):
//   value               (N, S, M, D)        S = sum over levels of h * w, M heads, D channels
//   spatial_shapes      (L, 2) int64        (h, w) of each level
//   level_start_index   (L,) int64          first row of each level in S
//   sampling_locations  (N, Q, M, L, P, 2)  (x, y) in [0, 1], align_corners=False
//   attention_weights   (N, Q, M, L, P)
//   output              (N, Q, M * D)
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <cmath>

namespace prolab::msda {

// The four pixels around a sampling point and their bilinear weights, with zero padding
// outside the map: the semantics of grid_sample(mode="bilinear", padding_mode="zeros",
// align_corners=False). Corner order: (low y, low x), (low y, high x), (high y, low x),
// (high y, high x).
template <typename acc_t>
struct Bilinear {
  int64_t index[4];  // row of the corner within its level (y * w + x)
  bool valid[4];     // corner inside the map
  acc_t ly, lx;      // fractional offsets from the low corner
  acc_t hy, hx;      // 1 - ly, 1 - lx

  C10_HOST_DEVICE acc_t weight(int corner) const {
    switch (corner) {
      case 0: return hy * hx;
      case 1: return hy * lx;
      case 2: return ly * hx;
      default: return ly * lx;
    }
  }
};

template <typename acc_t>
C10_HOST_DEVICE inline acc_t floor_of(acc_t v) {
#ifdef __CUDA_ARCH__
  return ::floor(v);  // CUDA's float and double overloads
#else
  return std::floor(v);
#endif
}

// Fills `b` for the point (x, y) in [0, 1] coordinates on an h x w map; false when no corner
// lies inside the map, so the point contributes nothing. A point exactly one pixel before
// the map (y_im == -1) still counts: its weight is zero but, as in grid_sample, its location
// gradient is not. (Deformable-DETR's kernels drop it, which only differs at such points.)
template <typename acc_t>
C10_HOST_DEVICE inline bool bilinear_corners(acc_t x, acc_t y, int64_t h, int64_t w, Bilinear<acc_t>& b) {
  const acc_t y_im = y * static_cast<acc_t>(h) - acc_t(0.5);
  const acc_t x_im = x * static_cast<acc_t>(w) - acc_t(0.5);
  if (!(y_im >= acc_t(-1) && x_im >= acc_t(-1) && y_im < static_cast<acc_t>(h) && x_im < static_cast<acc_t>(w))) {
    return false;
  }
  const acc_t y_floor = floor_of(y_im);
  const acc_t x_floor = floor_of(x_im);
  const int64_t y_low = static_cast<int64_t>(y_floor);
  const int64_t x_low = static_cast<int64_t>(x_floor);
  b.ly = y_im - y_floor;
  b.lx = x_im - x_floor;
  b.hy = acc_t(1) - b.ly;
  b.hx = acc_t(1) - b.lx;
  const bool y_low_in = y_low >= 0;
  const bool y_high_in = y_low + 1 < h;
  const bool x_low_in = x_low >= 0;
  const bool x_high_in = x_low + 1 < w;
  b.index[0] = y_low * w + x_low;
  b.index[1] = b.index[0] + 1;
  b.index[2] = b.index[0] + w;
  b.index[3] = b.index[2] + 1;
  b.valid[0] = y_low_in && x_low_in;
  b.valid[1] = y_low_in && x_high_in;
  b.valid[2] = y_high_in && x_low_in;
  b.valid[3] = y_high_in && x_high_in;
  return true;
}

// Problem sizes read off validated inputs.
struct Sizes {
  int64_t batch, values, heads, channels, queries, levels, points;
};

// TORCH_CHECKs every shape, dtype, device and contiguity rule, naming the offending argument.
Sizes check_forward_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights);

// The forward checks plus grad_output's shape, dtype, device and contiguity.
Sizes check_backward_inputs(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights);

}  // namespace prolab::msda
