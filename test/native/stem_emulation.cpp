// A CPU test of the float stem's pieces (native/cuda/stem.h), the same functions the CUDA backend's
// kernels call: the space-to-depth index map (pack_value, packed_geom), the exponent and the
// three-digit split of the float weights, the border sums and the exact combine. The int8 tensor-core
// product is emulated by its definition (an exact integer im2col product over the packed geometry,
// vertical zero padding as the kernel's zero-fill), so this checks everything of the stem but the
// kernel itself (which the GPU suite checks, test/gpu/agreement.test.ts "first layer on pixels").
// Compared with a float64 convolution of x = px·s + o and with an fp32 one (the CPU's kind of sum).
// The grouped single product (TERNLAB_STEM=grouped: interleaved digit rows, the three sums combined
// in the thread that holds them) is emulated too, through the same column maps, and must give the
// same bits as the three products.
//
//   c++ -std=c++17 -O2 test/native/stem_emulation.cpp -o /tmp/stem_emulation && /tmp/stem_emulation
//   /tmp/stem_emulation break=pack|shift|digit|border|low|grouped   (a deliberate bug: must fail)
//   /tmp/stem_emulation weights=normal   (every channel normal, as He's initialisation: the error report)
//   /tmp/stem_emulation io=DIR           (given pixels and weights: see io_mode)
// Run by test/stem.test.ts. Exit status 0 and "ok" on the last line when every check passes.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../../native/cuda/stem.h"

using tl::ConvGeom;
namespace stem = tl::stem;

static std::string g_break;
static bool g_normal_only = false;  // weights=normal: every channel normal (He-like), for the error report
static int g_failures = 0;
#define CHECK(cond, ...)                          \
  do {                                            \
    if (!(cond)) {                                \
      if (g_failures++ < 12) {                    \
        std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
        std::printf(__VA_ARGS__);                 \
        std::printf("\n");                        \
      }                                           \
    }                                             \
  } while (0)

struct Rng {  // splitmix64
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }
  double normal() { return std::sqrt(-2.0 * std::log(uniform() + 1e-300)) * std::cos(6.283185307179586 * uniform()); }
};

static int out_dim(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

// Every N the weights can produce: digits in [−128, 127] and N recovered exactly.
static void check_split_exhaustive() {
  const int32_t lim = 127 * 65536;
  for (int32_t N = -lim; N <= lim; ++N) {
    int8_t d[3];
    stem::split(N, d);
    if (g_break == "digit") d[2] = static_cast<int8_t>(d[2] / 2 * 2);
    const int32_t back = d[0] * 65536 + d[1] * 256 + d[2];
    if (back != N) { CHECK(false, "split(%d) = %d %d %d gives %d", N, d[0], d[1], d[2], back); return; }
  }
}
// exponent(): max·2^−e in (63.5, 127], at the boundaries too
static void check_exponent() {
  const float cases[] = {1.0f, 127.0f, 127.00001f, 63.5f, 64.0f, 126.99999f, 0.0123f, 1e-30f, 3e38f, 1e-40f, 0.5f, 254.0f, 255.0f};
  for (float m : cases) {
    const int e = stem::exponent(m);
    const double a = std::ldexp(static_cast<double>(m), -e);
    CHECK(a <= 127.0 && a > 63.5, "exponent(%g) = %d gives %g", m, e, a);
  }
  CHECK(stem::exponent(0.0f) == 0, "exponent(0)");
  CHECK(stem::exponent(INFINITY) == stem::kNonFinite && stem::exponent(NAN) == stem::kNonFinite, "exponent of a non-finite");
}

struct Case {
  const char* name;
  ConvGeom g;
  float s, o;
};

// Weights [oc][kh][kw][c] of varied channels: normal, uniform, all zero, one large entry among
// tiny ones, powers of two at the exponent's boundary, ties of the rounding (k + ½)·2^(e−16), tiny.
static std::vector<float> weights(const ConvGeom& g, Rng& r) {
  const int64_t K = g.k();
  std::vector<float> w(static_cast<size_t>(g.oc * K));
  for (int o = 0; o < g.oc; ++o) {
    float* wo = w.data() + o * K;
    const int kind = g_normal_only ? 0 : o % 8;
    for (int64_t k = 0; k < K; ++k) {
      float v = 0.0f;
      switch (kind) {
        case 0: case 1: case 2: v = static_cast<float>(0.05 * r.normal()); break;
        case 3: v = static_cast<float>(0.2 * (2 * r.uniform() - 1)); break;
        case 4: v = 0.0f; break;
        case 5: v = static_cast<float>(1e-4 * r.normal()); if (k == K / 2) v = 3.0f; break;
        case 6: v = std::ldexp(static_cast<float>(static_cast<int>(r.next() % 255) - 127), -9); if (k == 0) v = 127.0f / 512; break;
        // ties of the rounding: the max 7.5 gives e = −4, so w·2^(16−e) = j + ½, rintf to even
        case 7: v = k == 0 ? 7.5f : std::ldexp(static_cast<float>(static_cast<int>(r.next() % (1u << 23)) - (1 << 22)) + 0.5f, -20); break;
      }
      wo[k] = v;
    }
    if (!g_normal_only && o == 9 % g.oc && g.oc > 9) for (int64_t k = 0; k < K; ++k) wo[k] = static_cast<float>(1e-30 * r.normal());
  }
  return w;
}

// Given pixels and weights (io mode), or random ones; y_out: the emulated CUDA output
static void run(const Case& cs, uint64_t seed, const std::vector<uint8_t>* px_in = nullptr, const std::vector<float>* w_in = nullptr,
                std::vector<float>* y_out = nullptr) {
  const ConvGeom& g = cs.g;
  CHECK(stem::applies(g), "%s: stem::applies", cs.name);
  Rng r(seed);
  std::vector<uint8_t> px(static_cast<size_t>(g.in_elems()));
  for (auto& p : px) p = static_cast<uint8_t>(r.next() & 255);
  px[0] = 0; px[1] = 255; px[px.size() - 1] = 255;
  if (px_in) px = *px_in;
  const std::vector<float> w = w_in ? *w_in : weights(g, r);
  if (y_out) y_out->assign(static_cast<size_t>(g.rows() * g.oc), 0.0f);
  const int64_t K = g.k();

  // exponents, digits (packed planes [oc][kh][cp]) and the weights as the product sees them
  const ConvGeom gp = stem::packed_geom(g);
  const int cp = gp.c;
  CHECK(cp % 16 == 0 && cp >= g.kw * g.c && cp < g.kw * g.c + 16, "%s: packed width %d", cs.name, cp);
  CHECK(gp.oh == g.oh && gp.ow == g.ow && out_dim(gp.h, gp.kh, gp.sh, gp.ph) == g.oh && out_dim(gp.w, gp.kw, gp.sw, gp.pw) == g.ow,
        "%s: the packed geometry's output", cs.name);
  std::vector<int> ex(g.oc);
  int64_t ties = 0;
  std::vector<int8_t> planes(static_cast<size_t>(3 * g.oc * g.kh * cp), 0);
  const int64_t plane = static_cast<int64_t>(g.oc) * g.kh * cp;
  for (int o = 0; o < g.oc; ++o) {
    float m = 0;  // as k_stem_exponents: a NaN or an infinity anywhere makes the channel non-finite
    bool finite = true;
    for (int64_t k = 0; k < K; ++k) {
      finite = finite && std::fabs(w[o * K + k]) <= 3.40282347e38f;
      m = std::fmax(m, std::fabs(w[o * K + k]));
    }
    ex[o] = finite ? stem::exponent(m) : stem::kNonFinite;
    for (int ky = 0; ky < g.kh; ++ky)
      for (int j = 0; j < g.kw * g.c; ++j) {
        const float wv = w[(static_cast<int64_t>(o) * g.kh + ky) * g.kw * g.c + j];
        const int32_t N = stem::fixed(wv, ex[o]);
        if (o % 8 == 7 && !g_normal_only && j > 0) {  // the ties: N even, |N − w·2^(16−e)| = ½
          ties += std::fabs(std::ldexp(static_cast<double>(wv), 16 - ex[o]) - N) == 0.5;
          CHECK(N % 2 == 0, "%s: a tie rounded to odd N = %d", cs.name, N);
        }
        const double err = std::fabs(static_cast<double>(wv) - std::ldexp(static_cast<double>(N), ex[o] - 16));
        CHECK(err <= std::ldexp(1.0, ex[o] - 17), "%s: |w − N·2^(e−16)| = %g above 2^(e−17) (w %g, e %d)", cs.name, err, wv, ex[o]);
        int8_t d[3];
        stem::split(N, d);
        if (g_break == "digit") d[2] = 0;
        const int64_t at = (static_cast<int64_t>(o) * g.kh + ky) * cp + j;
        for (int i = 0; i < 3; ++i) planes[i * plane + at] = d[i];
      }
  }
  CHECK(g.oc < 8 || ties > 0, "%s: no ties were made", cs.name);
  // P = the packed pixels, every index through pack_value
  std::vector<int8_t> P(static_cast<size_t>(static_cast<int64_t>(g.n) * g.h * g.ow * cp));
  for (int64_t n = 0; n < g.n; ++n)
    for (int iy = 0; iy < g.h; ++iy)
      for (int ox = 0; ox < g.ow; ++ox)
        for (int j = 0; j < cp; ++j) {
          int jj = j;
          if (g_break == "pack" && j == 1 && g.c > 1) jj = g.c;  // channel 1 of tap 0 read from tap 1
          int8_t v = stem::pack_value(px.data(), g, n, iy, ox, jj);
          if (g_break == "shift" && ox == g.ow - 1) v = stem::pack_value(px.data(), g, n, iy, ox - 1, jj);
          P[((n * g.h + iy) * g.ow + ox) * cp + j] = v;
        }
  // the kernel's product by its definition: y[m][o] = Σ_k im2col_gp(P)[m][k]·W_i[o][k], zero outside
  auto product = [&](const int8_t* W, int64_t m, int o) {
    const int64_t n = m / (static_cast<int64_t>(gp.oh) * gp.ow);
    const int p = static_cast<int>(m % (static_cast<int64_t>(gp.oh) * gp.ow)), oy = p / gp.ow, ox = p % gp.ow;
    int32_t s = 0;
    for (int ky = 0; ky < gp.kh; ++ky)
      for (int kx = 0; kx < gp.kw; ++kx) {
        const int iy = oy * gp.sh - gp.ph + ky, ix = ox * gp.sw - gp.pw + kx;
        if (iy < 0 || iy >= gp.h || ix < 0 || ix >= gp.w) continue;
        const int8_t* xr = P.data() + ((n * gp.h + iy) * gp.w + ix) * gp.c;
        const int8_t* wr = W + (static_cast<int64_t>(o) * gp.kh * gp.kw + ky * gp.kw + kx) * gp.c;
        for (int c = 0; c < gp.c; ++c) s += xr[c] * wr[c];
      }
    return s;
  };
  // the grouped variant's weight rows (TERNLAB_STEM=grouped), through stem::grouped_source as the kernel
  const int ncols = stem::grouped_columns(g.oc);
  std::vector<int8_t> grouped(static_cast<size_t>(ncols) * g.kh * cp, 0);
  for (int row = 0; row < ncols; ++row) {
    int o, d;
    stem::grouped_source(row, &o, &d);
    if (d < 3 && o < g.oc) CHECK(stem::grouped_row(o, d) == row, "%s: grouped_row(%d, %d) != %d", cs.name, o, d, row);
    if (d >= 3 || o >= g.oc) continue;
    for (int64_t k = 0; k < static_cast<int64_t>(g.kh) * cp; ++k) grouped[row * g.kh * cp + k] = planes[d * plane + o * g.kh * cp + k];
  }
  const float o2 = std::fma(128.0f, cs.s, cs.o);
  // the grouped epilogue's view: warp slab q, fragment columns 2t + b, three n8 tiles of digits
  std::vector<float> y_grouped(static_cast<size_t>(g.rows() * g.oc), NAN);
  for (int64_t m = 0; m < g.rows(); ++m) {
    const int p = static_cast<int>(m % (static_cast<int64_t>(g.oh) * g.ow));
    for (int q = 0; q < ncols / 32; ++q)
      for (int t = 0; t < 4; ++t)
        for (int b = 0; b < 2; ++b) {
          const int o = stem::grouped_channel(32 * q, t, b);
          if (o >= g.oc) continue;
          int32_t v[3];
          for (int d = 0; d < 3; ++d) v[d] = product(grouped.data(), m, 32 * q + 8 * d + 2 * t + b);
          if (g_break == "grouped") std::swap(v[1], v[2]);
          y_grouped[m * g.oc + o] = stem::combine(v[0], stem::combine_low(v[1], v[2]),
                                                  stem::border_sum(g, w.data(), ex[o], o, p / g.ow, p % g.ow), cs.s, o2, ex[o]);
        }
  }
  double num_ours = 0, num_cpu = 0, den = 0, num_vs_cpu = 0, worst_ratio = 0;
  for (int64_t m = 0; m < g.rows(); ++m) {
    const int p = static_cast<int>(m % (static_cast<int64_t>(g.oh) * g.ow)), oy = p / g.ow, ox = p % g.ow;
    const int64_t n = m / (static_cast<int64_t>(g.oh) * g.ow);
    for (int o = 0; o < g.oc; ++o) {
      // the three stores in turn, as StoreStemLow / Mid / Top
      int32_t slot = product(planes.data() + 2 * plane, m, o);
      slot = stem::combine_low(product(planes.data() + plane, m, o), g_break == "low" ? slot / 2 : slot);
      int64_t B = stem::border_sum(g, w.data(), ex[o], o, oy, ox);
      if (g_break == "border") B = stem::border_sum(g, w.data(), ex[o], o, oy, ox == 0 ? 1 : ox);
      const float y = stem::combine(product(planes.data(), m, o), slot, B, cs.s, o2, ex[o]);
      if (y_out) (*y_out)[m * g.oc + o] = y;
      const float yg = y_grouped[m * g.oc + o];
      CHECK(std::memcmp(&y, &yg, sizeof y) == 0, "%s: the grouped product's y[%lld][%d] = %.9g, the three products' %.9g", cs.name,
            static_cast<long long>(m), o, yg, y);
      // float64 reference of x = px·s + o (s, o the floats), fp32 sums of the rounded input (the CPU's
      // kind), and the bound: 2^(e−17)·Σ|x| (the weights' rounding) + the combine's roundings
      double ref = 0, absx = 0, T = 0, Bd = 0;
      float cpu = 0;
      for (int ky = 0; ky < g.kh; ++ky)
        for (int kx = 0; kx < g.kw; ++kx) {
          const int iy = oy * g.sh - g.ph + ky, ix = ox * g.sw - g.pw + kx;
          if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
          for (int c = 0; c < g.c; ++c) {
            const int pv = px[((n * g.h + iy) * g.w + ix) * g.c + c];
            const float wv = w[((static_cast<int64_t>(o) * g.kh + ky) * g.kw + kx) * g.c + c];
            const double x = pv * static_cast<double>(cs.s) + cs.o;
            ref += x * wv;
            absx += std::fabs(x);
            T += (pv - 128.0) * wv;
            Bd += wv;
            const float xf = static_cast<float>(pv) * cs.s + cs.o;  // two roundings, as the CPU's normalize
            cpu += xf * wv;
          }
        }
      const double u = std::ldexp(1.0, -24);
      const double bound = ex[o] == stem::kNonFinite ? 0
                           : std::ldexp(1.0, ex[o] - 17) * absx +
                                 1.01 * u * (2 * std::fabs(cs.s * T) + 3 * std::fabs(o2 * Bd) + std::fabs(cs.s * T + o2 * Bd)) + 1e-300;
      const double err = std::fabs(y - ref);
      CHECK(err <= bound || (w_in && ex[o] == stem::kNonFinite), "%s: y[%lld][%d] = %.9g, float64 %.9g: error %.3g above the bound %.3g", cs.name,
            static_cast<long long>(m), o, y, ref, err, bound);
      worst_ratio = std::fmax(worst_ratio, err / bound);
      num_ours += (y - ref) * (y - ref);
      num_cpu += (cpu - ref) * (cpu - ref);
      num_vs_cpu += (static_cast<double>(y) - cpu) * (static_cast<double>(y) - cpu);
      den += ref * ref;
    }
  }
  const double e_ours = std::sqrt(num_ours / den), e_cpu = std::sqrt(num_cpu / den), e_vs = std::sqrt(num_vs_cpu / den);
  std::printf("%-44s float64: ours %.2e, fp32 sums %.2e (ratio %.2f); ours vs fp32 %.2e; worst error/bound %.3f\n", cs.name, e_ours,
              e_cpu, e_ours / e_cpu, e_vs, worst_ratio);
  CHECK(e_vs <= 1e-6, "%s: normwise difference from the fp32 sums %.3g above 1e-6", cs.name, e_vs);
}

static ConvGeom geom(int n, int h, int w, int c, int oc, int kh, int kw, int sh, int sw, int ph, int pw) {
  ConvGeom g;
  g.n = n; g.h = h; g.w = w; g.c = c; g.oc = oc; g.kh = kh; g.kw = kw; g.sh = sh; g.sw = sw; g.ph = ph; g.pw = pw;
  g.oh = out_dim(h, kh, sh, ph);
  g.ow = out_dim(w, kw, sw, pw);
  return g;
}

static std::vector<char> slurp(const std::string& path) {
  std::vector<char> b;
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    char buf[1 << 16];
    size_t k;
    while ((k = std::fread(buf, 1, sizeof buf, f)) > 0) b.insert(b.end(), buf, buf + k);
    std::fclose(f);
  }
  return b;
}
// io=DIR: DIR/geom.txt "n h w c oc kh kw sh sw ph pw scale offset", DIR/px.bin (uint8), DIR/w.bin
// (float32) in; DIR/y.bin, the emulated CUDA output, out. Lets a script run the GPU suite's own
// checks (test/gpu/agreement.test.ts) on the emulation, to test those checks without a GPU.
static int io_mode(const std::string& dir) {
  FILE* f = std::fopen((dir + "/geom.txt").c_str(), "r");
  if (!f) return 2;
  int v[11];
  double s, o;
  for (int& x : v)
    if (std::fscanf(f, "%d", &x) != 1) return 2;
  if (std::fscanf(f, "%lf %lf", &s, &o) != 2) return 2;
  std::fclose(f);
  const ConvGeom g = geom(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]);
  const std::vector<char> pb = slurp(dir + "/px.bin"), wb = slurp(dir + "/w.bin");
  std::vector<uint8_t> px(pb.begin(), pb.end());
  std::vector<float> w(wb.size() / 4);
  std::memcpy(w.data(), wb.data(), w.size() * 4);
  if (static_cast<int64_t>(px.size()) != g.in_elems() || static_cast<int64_t>(w.size()) != g.oc * g.k()) return 2;
  std::vector<float> y;
  run(Case{"io", g, static_cast<float>(s), static_cast<float>(o)}, 0, &px, &w, &y);
  FILE* out = std::fopen((dir + "/y.bin").c_str(), "wb");
  std::fwrite(y.data(), 4, y.size(), out);
  std::fclose(out);
  return g_failures ? 1 : 0;
}

int main(int argc, char** argv) {
  const char* io = nullptr;
  for (int i = 1; i < argc; ++i)
    if (!std::strncmp(argv[i], "break=", 6)) g_break = argv[i] + 6;
    else if (!std::strcmp(argv[i], "weights=normal")) g_normal_only = true;
    else if (!std::strncmp(argv[i], "io=", 3)) io = argv[i] + 3;
  if (io) return io_mode(io);
  check_exponent();
  check_split_exhaustive();
  const float s = 2.0f / 255, o = -1.0f;
  const float s_in = 1.0f / (255 * 0.226f), o_in = -0.449f / 0.226f;  // ImageNet-like: mean 0.449, std 0.226
  const Case cases[] = {
      {"ResNet stem 224x224x3, 7x7 s2 p3", geom(2, 224, 224, 3, 64, 7, 7, 2, 2, 3, 3), s, o},
      {"7x7 s2 p3 on 37x41x3 (odd sizes)", geom(2, 37, 41, 3, 16, 7, 7, 2, 2, 3, 3), s_in, o_in},
      {"3x3 s1 p1, c 3", geom(3, 32, 30, 3, 24, 3, 3, 1, 1, 1, 1), s, o},
      {"5x5 s1 p0, c 1", geom(2, 28, 28, 1, 10, 5, 5, 1, 1, 0, 0), s_in, o_in},
      {"7x7 s2 p3, c 1, 19x23", geom(2, 19, 23, 1, 12, 7, 7, 2, 2, 3, 3), s, o},
      {"AlexNet 11x11 s4 p2, c 3 (cp 48)", geom(1, 67, 67, 3, 16, 11, 11, 4, 4, 2, 2), s, o},
      {"3x5 s(1,2) p(0,2), c 2", geom(2, 13, 17, 2, 11, 3, 5, 1, 2, 0, 2), s_in, o_in},
      {"2x2 s3 p1, c 4 (stride above the kernel)", geom(2, 10, 11, 4, 9, 2, 2, 3, 3, 1, 1), s, o},
  };
  uint64_t seed = 1;
  for (const Case& c : cases) run(c, seed++);
  if (g_failures) {
    std::printf("%d failures\n", g_failures);
    return 1;
  }
  std::printf("ok\n");
  return 0;
}
