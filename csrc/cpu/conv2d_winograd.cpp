// Winograd's minimal filtering, F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural
// Networks", 2016), for the forward of 3x3 convolutions with stride 1 and no dilation.
//
// The output is cut into 2x2 tiles; each reads a 4x4 tile of the (zero-padded) input. With
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1],
//   A^T = [1 1 1 0; 0 1 -1 -1],
// an output tile is Y = A^T [ sum_c (G g_oc G^T) .* (B^T d_c B) ] A: per 2x2 outputs, 16 products per
// (input, output) channel pair instead of 36, 2.25 times fewer. Summed over channels, each of the 16
// positions xi of the 4x4 tile is a matrix product: M_xi (O x tiles) = U_xi (O x C) V_xi (C x tiles),
// 16 matrix products that ATen's GEMM does (at::bmm), between two cheap linear maps:
//   input transform   V = B^T d B for every input tile and channel: additions only;
//   output transform  Y = A^T M A (+ bias): additions only.
// The work is cut into units of (image, band of tile rows) whose V and M fit in kBandBytes (L2 cache),
// taken from a queue by the threads; each unit runs its own transforms and matrix products.
//
// The transforms mix the values of a tile, so an inf or NaN input (or an overflow in a transform) can
// give a NaN where the direct sum gives inf; a result that is not all finite is therefore computed again
// by the pixel tiles, which sum as torch does.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/conv2d_common.h"

namespace lenet_ext {

namespace {

constexpr int64_t kTiles = 16;                    // positions of a 4x4 input tile
constexpr int64_t kBandBytes = int64_t{2} << 20;  // one unit's V and M

// U[grp][xi][o][c] = (G g G^T)[xi] for weight g = w[grp * Og + o][c] (3 x 3).
template <typename scalar_t>
at::Tensor transformed_weights(const at::Tensor& w, const ConvDims& d, int64_t groups) {
  at::Tensor u = at::empty({groups, kTiles, d.Og, d.Cg}, w.options());
  const scalar_t* wd = w.const_data_ptr<scalar_t>();
  scalar_t* ud = u.mutable_data_ptr<scalar_t>();
  const scalar_t half = scalar_t(0.5);
  at::parallel_for(0, groups * d.Og, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {  // q = grp * Og + o
      const int64_t grp = q / d.Og, o = q % d.Og;
      for (int64_t c = 0; c < d.Cg; ++c) {
        const scalar_t* g = wd + (q * d.Cg + c) * 9;
        scalar_t t[4][3];  // G g: 4 rows of 3
        for (int k = 0; k < 3; ++k) {
          t[0][k] = g[k];
          t[1][k] = (g[k] + g[3 + k] + g[6 + k]) * half;
          t[2][k] = (g[k] - g[3 + k] + g[6 + k]) * half;
          t[3][k] = g[6 + k];
        }
        for (int i = 0; i < 4; ++i) {  // (G g) G^T, row i
          const scalar_t row[4] = {t[i][0], (t[i][0] + t[i][1] + t[i][2]) * half,
                                   (t[i][0] - t[i][1] + t[i][2]) * half, t[i][2]};
          for (int j = 0; j < 4; ++j) {
            ud[((grp * kTiles + 4 * i + j) * d.Og + o) * d.Cg + c] = row[j];
          }
        }
      }
    }
  });
  return u;
}

// One unit's geometry: tile rows [ty0, ty1) of one image, TW tiles per row; V and M hold `ld` tiles per
// row of their matrices.
struct Band {
  int64_t n, ty0, ty1, TW, ld;
  int64_t tiles() const { return (ty1 - ty0) * TW; }
};

// V[xi][c][t] = (B^T d B)[xi] for the input tile t of channel c of group grp. Each input row is split into
// its even and odd padded columns first, so every loop below runs over consecutive tiles.
template <typename scalar_t>
void input_transform(const scalar_t* x, scalar_t* V, const Band& b, int64_t grp, const ConvDims& d,
                     const Window2d& win, int64_t channels) {
  const int64_t TW = b.TW, pt = win.pad[0], pl = win.pad[1];
  std::vector<scalar_t> even(TW + 1), odd(TW + 1), cols(4 * 4 * TW);  // cols[r][j][tx]
  for (int64_t c = 0; c < d.Cg; ++c) {
    const scalar_t* plane = x + ((b.n * channels + grp * d.Cg + c) * d.H) * d.W;
    for (int64_t ty = b.ty0; ty < b.ty1; ++ty) {
      for (int64_t r = 0; r < 4; ++r) {
        const int64_t ih = 2 * ty - pt + r;
        std::fill(even.begin(), even.end(), scalar_t(0));
        std::fill(odd.begin(), odd.end(), scalar_t(0));
        if (ih >= 0 && ih < d.H) {
          const scalar_t* row = plane + ih * d.W;
          // padded column p = iw + pl, p < 2 * TW + 2
          const int64_t p0 = pl, p1 = std::min(pl + d.W, 2 * TW + 2);
          for (int64_t p = p0; p < p1; ++p) {
            (p % 2 ? odd : even)[p / 2] = row[p - pl];
          }
        }
        // B^T along the row: d0..d3 = even[tx], odd[tx], even[tx + 1], odd[tx + 1]
        scalar_t* c0 = cols.data() + (4 * r + 0) * TW;
        scalar_t* c1 = cols.data() + (4 * r + 1) * TW;
        scalar_t* c2 = cols.data() + (4 * r + 2) * TW;
        scalar_t* c3 = cols.data() + (4 * r + 3) * TW;
        for (int64_t tx = 0; tx < TW; ++tx) {
          c0[tx] = even[tx] - even[tx + 1];
          c1[tx] = odd[tx] + even[tx + 1];
          c2[tx] = even[tx + 1] - odd[tx];
          c3[tx] = odd[tx] - odd[tx + 1];
        }
      }
      // B^T down the columns: rows 0..3 of the tile
      const int64_t t0 = (ty - b.ty0) * TW;
      for (int64_t j = 0; j < 4; ++j) {
        const scalar_t* r0 = cols.data() + (0 + j) * TW;
        const scalar_t* r1 = cols.data() + (4 + j) * TW;
        const scalar_t* r2 = cols.data() + (8 + j) * TW;
        const scalar_t* r3 = cols.data() + (12 + j) * TW;
        scalar_t* v0 = V + ((0 + j) * d.Cg + c) * b.ld + t0;
        scalar_t* v1 = V + ((4 + j) * d.Cg + c) * b.ld + t0;
        scalar_t* v2 = V + ((8 + j) * d.Cg + c) * b.ld + t0;
        scalar_t* v3 = V + ((12 + j) * d.Cg + c) * b.ld + t0;
        for (int64_t tx = 0; tx < TW; ++tx) {
          v0[tx] = r0[tx] - r2[tx];
          v1[tx] = r1[tx] + r2[tx];
          v2[tx] = r2[tx] - r1[tx];
          v3[tx] = r1[tx] - r3[tx];
        }
      }
    }
  }
}

// out[n][grp * Og + o] rows 2 ty, 2 ty + 1 (those that exist) = (A^T M A) + bias, from M[xi][o][t].
// Returns whether every value it wrote is finite.
template <typename scalar_t>
bool output_transform(const scalar_t* M, scalar_t* out, const scalar_t* bias, const Band& b, int64_t grp,
                      const ConvDims& d, int64_t out_channels) {
  const int64_t TW = b.TW;
  std::vector<scalar_t> s(4 * TW), ye(TW), yo(TW);
  bool finite = true;
  for (int64_t o = 0; o < d.Og; ++o) {
    const int64_t oc = grp * d.Og + o;
    scalar_t* plane = out + (b.n * out_channels + oc) * d.L;
    for (int64_t ty = b.ty0; ty < b.ty1; ++ty) {
      const int64_t t0 = (ty - b.ty0) * TW;
      for (int64_t i = 0; i < 2 && 2 * ty + i < d.OH; ++i) {
        // A^T down the columns: s[j] = row i of A^T times column j of M
        for (int64_t j = 0; j < 4; ++j) {
          const scalar_t* m0 = M + ((0 + j) * d.Og + o) * b.ld + t0;
          const scalar_t* m1 = M + ((4 + j) * d.Og + o) * b.ld + t0;
          const scalar_t* m2 = M + ((8 + j) * d.Og + o) * b.ld + t0;
          const scalar_t* m3 = M + ((12 + j) * d.Og + o) * b.ld + t0;
          scalar_t* sj = s.data() + j * TW;
          if (i == 0) {
            for (int64_t tx = 0; tx < TW; ++tx) {
              sj[tx] = m0[tx] + m1[tx] + m2[tx];
            }
          } else {
            for (int64_t tx = 0; tx < TW; ++tx) {
              sj[tx] = m1[tx] - m2[tx] - m3[tx];
            }
          }
        }
        // A along the row: the tile's two outputs
        const scalar_t* s0 = s.data();
        const scalar_t* s1 = s.data() + TW;
        const scalar_t* s2 = s.data() + 2 * TW;
        const scalar_t* s3 = s.data() + 3 * TW;
        for (int64_t tx = 0; tx < TW; ++tx) {
          ye[tx] = s0[tx] + s1[tx] + s2[tx];
          yo[tx] = s1[tx] - s2[tx] - s3[tx];
        }
        scalar_t* row = plane + (2 * ty + i) * d.OW;
        const int64_t pairs = d.OW / 2;
        if (bias) {
          const scalar_t bv = bias[oc];
          for (int64_t tx = 0; tx < pairs; ++tx) {
            row[2 * tx] = ye[tx] + bv;
            row[2 * tx + 1] = yo[tx] + bv;
          }
          if (d.OW % 2) {
            row[d.OW - 1] = ye[pairs] + bv;
          }
        } else {
          for (int64_t tx = 0; tx < pairs; ++tx) {
            row[2 * tx] = ye[tx];
            row[2 * tx + 1] = yo[tx];
          }
          if (d.OW % 2) {
            row[d.OW - 1] = ye[pairs];
          }
        }
        finite = finite && all_finite(row, d.OW);
      }
    }
  }
  return finite;
}

}  // namespace

// The 16 matrix products need a few channels each way to be matrix products at all: a depthwise layer's
// are 1 x 1 (forced there, Winograd ran at 0.19x the direct kernels).
constexpr int64_t kWinogradMinChannels = 8;

bool winograd_applies(const Conv2dParams& p) {
  const Window2d& w = p.win;
  return w.kernel[0] == 3 && w.kernel[1] == 3 && is_stride1(w) && w.dilation[0] == 1 && w.dilation[1] == 1 &&
         w.out[0] > 0 && w.out[1] > 0 && p.in_per_group() >= kWinogradMinChannels &&
         p.out_per_group() >= kWinogradMinChannels;
}

template <typename scalar_t>
bool conv2d_forward_winograd(const at::Tensor& x, const at::Tensor& w, const at::Tensor* bias, at::Tensor& out,
                             const Conv2dParams& p) {
  const ConvDims d(p);
  const int64_t TH = (d.OH + 1) / 2, TW = (d.OW + 1) / 2;
  const int64_t per_row = kTiles * (d.Cg + d.Og) * TW * static_cast<int64_t>(sizeof(scalar_t));
  const int64_t band_rows = std::clamp<int64_t>(kBandBytes / per_row, 1, TH);
  const int64_t bands = (TH + band_rows - 1) / band_rows;
  const int64_t ld = band_rows * TW;
  const at::Tensor u = transformed_weights<scalar_t>(w, d, p.groups);
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const scalar_t* bd = bias ? bias->const_data_ptr<scalar_t>() : nullptr;
  scalar_t* od = out.mutable_data_ptr<scalar_t>();

  std::atomic<bool> finite{true};
  WorkQueue queue(p.batch * bands);
  run_workers(p.batch * bands, [&] {
    const BelowAutograd below_autograd;  // at::bmm_out on a worker thread
    // V and M live for the thread, so repeated calls do not fault in fresh pages
    thread_local std::vector<scalar_t> v_buf, m_buf;
    v_buf.resize(std::max<size_t>(v_buf.size(), kTiles * d.Cg * ld));
    m_buf.resize(std::max<size_t>(m_buf.size(), kTiles * d.Og * ld));
    const at::Tensor V = at::from_blob(v_buf.data(), {kTiles, d.Cg, ld}, x.options());
    at::Tensor M = at::from_blob(m_buf.data(), {kTiles, d.Og, ld}, x.options());
    for (int64_t unit; queue.pop(unit);) {
      const int64_t ty0 = (unit % bands) * band_rows;
      const Band b{unit / bands, ty0, std::min(TH, ty0 + band_rows), TW, ld};
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        input_transform<scalar_t>(xd, v_buf.data(), b, grp, d, p.win, p.in_channels);
        at::Tensor m = M.narrow(2, 0, b.tiles());
        at::bmm_out(m, u[grp], V.narrow(2, 0, b.tiles()));
        if (!output_transform<scalar_t>(m_buf.data(), od, bd, b, grp, d, p.out_channels)) {
          finite = false;
        }
      }
    }
  });
  return finite.load();
}

template bool conv2d_forward_winograd<float>(const at::Tensor&, const at::Tensor&, const at::Tensor*, at::Tensor&,
                                             const Conv2dParams&);
template bool conv2d_forward_winograd<double>(const at::Tensor&, const at::Tensor&, const at::Tensor*, at::Tensor&,
                                              const Conv2dParams&);

}  // namespace lenet_ext
