// ProLab's training loss term on CPU, fused: upsampling, sigmoid, cosine with the label's
// property row, and the gradient of all of it, in one pass over the pixels each way.
//
// The property heads' loss needs p = sigmoid(upsample(z / T)) at label resolution on K
// channels, |p|, and cos(p, m_label). Composed of ATen ops that is about ten full-resolution
// K-channel passes forward and back (the upsampled logits, p, p^2, their gradients, ...);
// here the vertical half of the bilinear upsampling, the sigmoid and the cosine happen per
// row in registers, and only per-pixel results are written. The horizontal half stays an
// ATen `upsample_bilinear2d` to (h, W) on 1/4 of the pixels: PyTorch's bilinear kernel
// interpolates along the width first and then blends two such rows, so the two halves give
// its numbers (up to FMA rounding).
//
// Ops (schemas at the bottom; autograd and fake kernels are registered from Python):
//   property_cosine(rows, multi_hot, label, out_height, align_corners, ignore_index)
//     -> (cosine, norm, prediction)
//   property_cosine_backward(grad_cosine, rows, multi_hot, label, cosine, norm, out_height,
//                            align_corners, ignore_index) -> grad_rows
// rows (N, K, h, W): logits / T already resized to the output width; multi_hot (C, K): the
// L2-normalised class rows; label (N, H, W) int64. cosine (N, H, W): cos(p, m_label), 0 at
// ignored pixels; norm (N, H, W): max(|p|, 1e-8); prediction (N, H, W) int64: argmax over
// classes of cos(p, m_c) (the first on ties, as torch.argmax).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

namespace prolab::property_cosine {
namespace {

using at::vec::Vectorized;

constexpr const char* kOp = "prolab::property_cosine: ";
constexpr double kNormFloor = 1e-8;  // the composite's clamp_min on |p|

std::string num(int64_t n) {  // see msda.cpp: numbers go into messages as strings
  return std::to_string(n);
}

// One output row's vertical bilinear taps: rows i0 and i1 of the input, weights l0 and l1.
template <typename scalar_t>
struct Tap {
  int64_t i0;
  int64_t i1;
  scalar_t l0;
  scalar_t l1;
};

// PyTorch's upsample_bilinear2d source indices and weights (aten/src/ATen/native/UpSample.h:
// area_pixel_compute_scale, area_pixel_compute_source_index, compute_source_index_and_lambda).
template <typename scalar_t>
std::vector<Tap<scalar_t>> vertical_taps(int64_t in_size, int64_t out_size, bool align_corners) {
  std::vector<Tap<scalar_t>> taps(out_size);
  const scalar_t scale = align_corners
      ? (out_size > 1 ? static_cast<scalar_t>(in_size - 1) / static_cast<scalar_t>(out_size - 1) : scalar_t(0))
      : static_cast<scalar_t>(in_size) / static_cast<scalar_t>(out_size);
  for (int64_t out = 0; out < out_size; ++out) {
    if (in_size == out_size && !align_corners) {
      taps[out] = {out, out, scalar_t(1), scalar_t(0)};
      continue;
    }
    const scalar_t real = align_corners
        ? scale * static_cast<scalar_t>(out)
        : std::max(scale * (static_cast<scalar_t>(out) + scalar_t(0.5)) - scalar_t(0.5), scalar_t(0));
    const int64_t i0 = static_cast<int64_t>(real);
    const int64_t i1 = i0 + (i0 < in_size - 1 ? 1 : 0);
    const scalar_t l1 = std::min(std::max(real - static_cast<scalar_t>(i0), scalar_t(0)), scalar_t(1));
    taps[out] = {i0, i1, scalar_t(1) - l1, l1};
  }
  return taps;
}

// The non-zero entries of each property's column of the multi-hot: classes have a handful of
// properties each, so the class dot products skip most of the C x K matrix.
template <typename scalar_t>
std::vector<std::vector<std::pair<int64_t, scalar_t>>> columns(const scalar_t* multi_hot, int64_t classes,
                                                               int64_t properties) {
  std::vector<std::vector<std::pair<int64_t, scalar_t>>> nonzero(properties);
  for (int64_t c = 0; c < classes; ++c) {
    for (int64_t k = 0; k < properties; ++k) {
      const scalar_t m = multi_hot[c * properties + k];
      if (m != scalar_t(0)) {
        nonzero[k].emplace_back(c, m);
      }
    }
  }
  return nonzero;
}

// exp_u20: ATen's inline polynomial exp (within 2 ULP; double falls back to exp), where exp is
// a call into Sleef per vector (1 ULP): the kernel's forward and backward each take a fifth
// less time (16 x 128 x 128 pixels, K = 32, one core), within the tests' 1e-5 of the composite.
template <typename scalar_t>
inline Vectorized<scalar_t> sigmoid(const Vectorized<scalar_t>& u) {
  const Vectorized<scalar_t> one(scalar_t(1));
  return one / (one + u.neg().exp_u20());
}

struct Sizes {
  int64_t batch, properties, in_height, width, out_height, classes;
};

Sizes check_inputs(const at::Tensor& rows, const at::Tensor& multi_hot, const at::Tensor& label,
                   int64_t out_height) {
  TORCH_CHECK(rows.device().is_cpu(), kOp, "rows must be on the CPU, got ", rows.device().str());
  TORCH_CHECK(rows.dim() == 4, kOp, "rows must be (N, K, h, W), got ", num(rows.dim()), " dims");
  TORCH_CHECK(multi_hot.dim() == 2 && multi_hot.size(1) == rows.size(1), kOp,
              "multi_hot must be (C, K) with K = rows.size(1) = ", num(rows.size(1)));
  TORCH_CHECK(multi_hot.scalar_type() == rows.scalar_type(), kOp, "multi_hot must have rows' dtype");
  TORCH_CHECK(label.scalar_type() == at::kLong, kOp, "label must be int64");
  TORCH_CHECK(label.dim() == 3 && label.size(0) == rows.size(0) && label.size(1) == out_height &&
                  label.size(2) == rows.size(3),
              kOp, "label must be (N, out_height, W) = (", num(rows.size(0)), ", ", num(out_height), ", ",
              num(rows.size(3)), ")");
  TORCH_CHECK(out_height > 0 && rows.size(2) > 0, kOp, "empty input or output height");
  for (const auto* tensor : {&rows, &multi_hot, &label}) {
    TORCH_CHECK(tensor->device().is_cpu(), kOp, "all inputs must be on the CPU");
    TORCH_CHECK(tensor->is_contiguous(), kOp, "inputs must be contiguous (call .contiguous())");
  }
  return {rows.size(0), rows.size(1), rows.size(2), rows.size(3), out_height, multi_hot.size(0)};
}

template <typename scalar_t>
void forward_kernel(const Sizes& s, const scalar_t* rows, const scalar_t* multi_hot, const int64_t* label,
                    bool align_corners, int64_t ignore_index, scalar_t* cosine, scalar_t* norm,
                    int64_t* prediction) {
  using Vec = Vectorized<scalar_t>;
  const auto taps = vertical_taps<scalar_t>(s.in_height, s.out_height, align_corners);
  const auto nonzero = columns(multi_hot, s.classes, s.properties);
  const int64_t plane = s.in_height * s.width;
  std::atomic<int64_t> bad_label{-1};
  // Parallel over output rows: each row's outputs belong to one thread.
  at::parallel_for(0, s.batch * s.out_height, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> squares(s.width);
    std::vector<scalar_t> dots(s.classes * s.width);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / s.out_height;
      const Tap<scalar_t>& tap = taps[row % s.out_height];
      std::fill(squares.begin(), squares.end(), scalar_t(0));
      std::fill(dots.begin(), dots.end(), scalar_t(0));
      const Vec l0(tap.l0), l1(tap.l1);
      for (int64_t k = 0; k < s.properties; ++k) {
        const scalar_t* top = rows + (n * s.properties + k) * plane + tap.i0 * s.width;
        const scalar_t* bottom = rows + (n * s.properties + k) * plane + tap.i1 * s.width;
        for (int64_t x = 0; x < s.width; x += Vec::size()) {
          const int64_t count = std::min<int64_t>(Vec::size(), s.width - x);
          const Vec p = sigmoid(Vec::loadu(top + x, count) * l0 + Vec::loadu(bottom + x, count) * l1);
          (Vec::loadu(squares.data() + x, count) + p * p).store(squares.data() + x, count);
          for (const auto& [c, m] : nonzero[k]) {
            scalar_t* dot = dots.data() + c * s.width + x;
            (Vec::loadu(dot, count) + p * Vec(m)).store(dot, count);
          }
        }
      }
      const int64_t offset = row * s.width;
      for (int64_t x = 0; x < s.width; ++x) {
        const scalar_t length = std::max(std::sqrt(squares[x]), static_cast<scalar_t>(kNormFloor));
        int64_t best = 0;
        for (int64_t c = 1; c < s.classes; ++c) {
          best = dots[c * s.width + x] > dots[best * s.width + x] ? c : best;
        }
        const int64_t target = label[offset + x];
        scalar_t cos = 0;
        if (target != ignore_index) {
          if (target < 0 || target >= s.classes) {
            bad_label.store(target);
          } else {
            cos = dots[target * s.width + x] / length;
          }
        }
        norm[offset + x] = length;
        cosine[offset + x] = cos;
        prediction[offset + x] = best;
      }
    }
  });
  const int64_t bad = bad_label.load();
  TORCH_CHECK(bad == -1, kOp, "label value ", num(bad), " is outside [0, ", num(s.classes),
              ") and is not ignore_index ", num(ignore_index));
}

// Properties per backward task: the per-pixel coefficients are loaded once for this many
// property planes, and (batch x blocks) tasks keep both cores of a small machine busy.
constexpr int64_t kPropertyBlock = 8;

template <typename scalar_t>
void backward_kernel(const Sizes& s, const scalar_t* grad_cosine, const scalar_t* rows, const scalar_t* multi_hot,
                     const int64_t* label, const scalar_t* cosine, const scalar_t* norm, bool align_corners,
                     int64_t ignore_index, scalar_t* grad_rows) {
  using Vec = Vectorized<scalar_t>;
  const auto taps = vertical_taps<scalar_t>(s.in_height, s.out_height, align_corners);
  const auto nonzero = columns(multi_hot, s.classes, s.properties);
  const int64_t pixels = s.out_height * s.width;
  // d cos / d p = m_label / |p| - cos p / |p|^2: per pixel two coefficients, a = g / |p| and
  // b = g cos / |p|^2 (b = 0 where the norm was clamped: there the norm has no gradient), and
  // the label as a float (-1 where ignored, matching no class) to select m_label in vectors.
  std::vector<scalar_t> a(s.batch * pixels), b(s.batch * pixels), class_of(s.batch * pixels);
  at::parallel_for(0, s.batch * pixels, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const bool ignored = label[i] == ignore_index;
      const scalar_t g = ignored ? scalar_t(0) : grad_cosine[i];
      const bool clamped = norm[i] <= static_cast<scalar_t>(kNormFloor);
      a[i] = g / norm[i];
      b[i] = clamped ? scalar_t(0) : g * cosine[i] / (norm[i] * norm[i]);
      class_of[i] = ignored ? scalar_t(-1) : static_cast<scalar_t>(label[i]);
    }
  });
  const int64_t plane = s.in_height * s.width;
  const int64_t blocks = (s.properties + kPropertyBlock - 1) / kPropertyBlock;
  // Parallel over (batch, block of properties): each task owns its planes of grad_rows, so
  // the two rows an output row blends into need no atomics and results do not depend on the
  // thread count.
  at::parallel_for(0, s.batch * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks;
      const int64_t first = (task % blocks) * kPropertyBlock;
      const int64_t last = std::min(first + kPropertyBlock, s.properties);
      const scalar_t* source = rows + (n * s.properties + first) * plane;
      scalar_t* grad = grad_rows + (n * s.properties + first) * plane;
      std::fill(grad, grad + (last - first) * plane, scalar_t(0));
      for (int64_t y = 0; y < s.out_height; ++y) {
        const Tap<scalar_t>& tap = taps[y];
        const Vec l0(tap.l0), l1(tap.l1), one(scalar_t(1)), zero(scalar_t(0));
        const int64_t offset = n * pixels + y * s.width;
        for (int64_t x = 0; x < s.width; x += Vec::size()) {
          const int64_t count = std::min<int64_t>(Vec::size(), s.width - x);
          const Vec coefficient_a = Vec::loadu(a.data() + offset + x, count);
          const Vec coefficient_b = Vec::loadu(b.data() + offset + x, count);
          const Vec classes = Vec::loadu(class_of.data() + offset + x, count);
          for (int64_t k = first; k < last; ++k) {
            const int64_t row0 = (k - first) * plane + tap.i0 * s.width + x;
            const int64_t row1 = (k - first) * plane + tap.i1 * s.width + x;
            const Vec p = sigmoid(Vec::loadu(source + row0, count) * l0 + Vec::loadu(source + row1, count) * l1);
            Vec target = zero;
            for (const auto& [c, m] : nonzero[k]) {
              target = Vec::blendv(target, Vec(m), classes == Vec(static_cast<scalar_t>(c)));
            }
            const Vec d_u = (coefficient_a * target - coefficient_b * p) * p * (one - p);
            (Vec::loadu(grad + row0, count) + d_u * l0).store(grad + row0, count);
            (Vec::loadu(grad + row1, count) + d_u * l1).store(grad + row1, count);
          }
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> property_cosine_cpu(const at::Tensor& rows, const at::Tensor& multi_hot,
                                                                   const at::Tensor& label, int64_t out_height,
                                                                   bool align_corners, int64_t ignore_index) {
  const Sizes s = check_inputs(rows, multi_hot, label, out_height);
  at::Tensor cosine = at::empty({s.batch, s.out_height, s.width}, rows.options());
  at::Tensor norm = at::empty_like(cosine);
  at::Tensor prediction = at::empty_like(label);
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "property_cosine_cpu", [&] {
    forward_kernel<scalar_t>(s, rows.const_data_ptr<scalar_t>(), multi_hot.const_data_ptr<scalar_t>(),
                             label.const_data_ptr<int64_t>(), align_corners, ignore_index,
                             cosine.mutable_data_ptr<scalar_t>(), norm.mutable_data_ptr<scalar_t>(),
                             prediction.mutable_data_ptr<int64_t>());
  });
  return {cosine, norm, prediction};
}

at::Tensor property_cosine_backward_cpu(const at::Tensor& grad_cosine, const at::Tensor& rows,
                                        const at::Tensor& multi_hot, const at::Tensor& label,
                                        const at::Tensor& cosine, const at::Tensor& norm, int64_t out_height,
                                        bool align_corners, int64_t ignore_index) {
  const Sizes s = check_inputs(rows, multi_hot, label, out_height);
  for (const auto* tensor : {&grad_cosine, &cosine, &norm}) {
    TORCH_CHECK(tensor->sizes() == label.sizes() && tensor->scalar_type() == rows.scalar_type() &&
                    tensor->is_contiguous() && tensor->device().is_cpu(),
                kOp, "grad_cosine, cosine and norm must be contiguous CPU tensors shaped like label, of rows' dtype");
  }
  at::Tensor grad_rows = at::empty_like(rows);  // each backward task zeroes its planes
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "property_cosine_backward_cpu", [&] {
    backward_kernel<scalar_t>(s, grad_cosine.const_data_ptr<scalar_t>(), rows.const_data_ptr<scalar_t>(),
                              multi_hot.const_data_ptr<scalar_t>(), label.const_data_ptr<int64_t>(),
                              cosine.const_data_ptr<scalar_t>(), norm.const_data_ptr<scalar_t>(), align_corners,
                              ignore_index, grad_rows.mutable_data_ptr<scalar_t>());
  });
  return grad_rows;
}

}  // namespace
}  // namespace prolab::property_cosine

TORCH_LIBRARY_FRAGMENT(prolab, m) {
  m.def(
      "property_cosine(Tensor rows, Tensor multi_hot, Tensor label, int out_height, bool align_corners, "
      "int ignore_index) -> (Tensor, Tensor, Tensor)");
  m.def(
      "property_cosine_backward(Tensor grad_cosine, Tensor rows, Tensor multi_hot, Tensor label, "
      "Tensor cosine, Tensor norm, int out_height, bool align_corners, int ignore_index) -> Tensor");
}

TORCH_LIBRARY_IMPL(prolab, CPU, m) {
  m.impl("property_cosine", &prolab::property_cosine::property_cosine_cpu);
  m.impl("property_cosine_backward", &prolab::property_cosine::property_cosine_backward_cpu);
}
