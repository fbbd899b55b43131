/*
The cuBLASLt calls of the trainer, checked against exact values, and real cuBLASLt against the CPU
emulation's stand-in (dev/cpucuda/cublaslt.cpp).

The same source builds twice: with nvcc (dev/cuda/Makefile) it calls the real cuBLASLt on a GPU; with
`make cpucuda` it calls the stand-in on the CPU. Both builds run the same cases on the same inputs
(generated from fixed seeds), so their outputs can be compared element by element:

  cublaslt_standin                  every case against exact values (double) computed here
  cublaslt_standin write FILE       the same, then every output to FILE
  cublaslt_standin compare FILE     the same, then every output against FILE, written by the other build

dev/gpu_session.sh stage `standin` runs `write` with the nvcc build on a GPU, then `compare` with the
emulated build: the stand-in is validated against the real library the first time a GPU is lent.

Cases: the calls llmc/cuda_matmul.cuh and llmc/cuda_attention.cuh make, at GPT-2 layer shapes scaled
down (C = 256, NH = 4, T = 64, N = B*T = 256 rows):
  matmul_forward: with the bias epilogue (qkv), without bias (LM head), with GELU_AUX_BIAS (fc: the
    output and the pre-activation);
  matmul_backward: dinp (bf16, beta 0); dweight accumulated (beta 1) into fp32 and into bf16;
  the attention's batched GEMMs (B*NH batches): A^T B (preatt, datt), A B (y, dq), A B^T (dv, dk).

Tolerance: per element, tol = BF16_RTOL |exact| (output rounded once to bf16, when bf16) +
accum_tol(k, sum |terms|) (any fp32 summation order) [+ for the GELU output: TANH_TOL |exact| and
1.2 times the pre-activation's bound, gelu' <= 1.13]. Each build must be within tol of the exact
value, so the two builds must be within 2 tol of each other (compare), whatever order each sums in.
*/
#include <errno.h>
#include "common.h"
#include "../../llmc/cuda_matmul.cuh"

#define LT_FILE_MAGIC 0x4c544348   // "LTCH"

// one output buffer of a case: device values, exact values and per-element tolerances
typedef struct {
    char name[48];
    std::vector<float> got, exact, tol;
} LtOutput;

static double gelu_ref(double x) { return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

// ----------------------------------------------------------------------------
// exact references, row-major, in double; mag receives sum |terms| per element

// out (N,OC) = inp (N,C) . w (OC,C)^T + bias
static void ref_linear(std::vector<double>& out, std::vector<double>& mag, const std::vector<float>& inp,
                       const std::vector<float>& w, const std::vector<float>* bias, int N, int C, int OC) {
    out.assign((size_t)N * OC, 0.0);
    mag.assign((size_t)N * OC, 0.0);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? (*bias)[o] : 0.0, m = bias ? fabs((*bias)[o]) : 0.0;
            for (int c = 0; c < C; c++) {
                double t = (double)inp[(size_t)n * C + c] * w[(size_t)o * C + c];
                s += t;
                m += fabs(t);
            }
            out[(size_t)n * OC + o] = s;
            mag[(size_t)n * OC + o] = m;
        }
}

// y (rows,cols) = sum_k a(r,k) b(k,c) + y0, with a(r,k) = A[r*ars + k*aks] and b(k,c) = B[k*bks + c*bcs]
static void ref_gemm(std::vector<double>& y, std::vector<double>& mag, const float* A, size_t ars, size_t aks,
                     const float* B, size_t bks, size_t bcs, const float* y0, int rows, int cols, int K) {
    y.assign((size_t)rows * cols, 0.0);
    mag.assign((size_t)rows * cols, 0.0);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            double s = y0 ? y0[(size_t)r * cols + c] : 0.0, m = fabs(s);
            for (int k = 0; k < K; k++) {
                double t = (double)A[r * ars + k * aks] * B[k * bks + c * bcs];
                s += t;
                m += fabs(t);
            }
            y[(size_t)r * cols + c] = s;
            mag[(size_t)r * cols + c] = m;
        }
}

// an output with tolerance BF16_RTOL |exact| (if rounded to bf16) + accum_tol(k, mag)
static LtOutput make_output(const char* name, std::vector<float> got, const std::vector<double>& exact,
                            const std::vector<double>& mag, int k, bool bf16) {
    LtOutput o;
    snprintf(o.name, sizeof(o.name), "%s", name);
    o.got = got;
    o.exact.resize(exact.size());
    o.tol.resize(exact.size());
    for (size_t i = 0; i < exact.size(); i++) {
        o.exact[i] = (float)exact[i];
        o.tol[i] = (bf16 ? BF16_RTOL * (float)fabs(exact[i]) : 0.0f) + accum_tol(k, mag[i]);
    }
    return o;
}

// ----------------------------------------------------------------------------
// the cases

static const int B = 4, T = 64, C = 256, NH = 4, HS = C / NH, N = B * T, VOCAB = 512;

// matmul_forward with bias (qkv: OC = 3C) and without (the LM head: OC = VOCAB)
static void case_forward(std::vector<LtOutput>& outs, const MatmulContext* ctx, Rng* rng, bool with_bias) {
    int OC = with_bias ? 3 * C : VOCAB;
    std::vector<float> inp = rand_bf16((size_t)N * C, -1.0f, 1.0f, rng), w = rand_bf16((size_t)OC * C, -0.1f, 0.1f, rng);
    std::vector<float> bias = rand_bf16(OC, -0.5f, 0.5f, rng);
    floatX *d_inp = to_device_bf16(inp), *d_w = to_device_bf16(w), *d_b = to_device_bf16(bias);
    floatX* d_out = dmalloc<floatX>((size_t)N * OC);
    matmul_forward(d_out, d_inp, d_w, with_bias ? d_b : NULL, N, C, OC, NULL, ctx);
    std::vector<double> exact, mag;
    ref_linear(exact, mag, inp, w, with_bias ? &bias : NULL, N, C, OC);
    outs.push_back(make_output(with_bias ? "forward, bias epilogue (qkv)" : "forward, no bias (LM head)",
                               download(d_out, exact.size()), exact, mag, C + 1, true));
    cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_b)); cudaCheck(cudaFree(d_out));
}

// matmul_forward with the GELU_AUX_BIAS epilogue (fc: OC = 4C): the pre-activation and gelu of it
static void case_forward_gelu(std::vector<LtOutput>& outs, const MatmulContext* ctx, Rng* rng) {
    int OC = 4 * C;
    std::vector<float> inp = rand_bf16((size_t)N * C, -1.0f, 1.0f, rng), w = rand_bf16((size_t)OC * C, -0.1f, 0.1f, rng);
    std::vector<float> bias = rand_bf16(OC, -0.5f, 0.5f, rng);
    floatX *d_inp = to_device_bf16(inp), *d_w = to_device_bf16(w), *d_b = to_device_bf16(bias);
    floatX *d_out = dmalloc<floatX>((size_t)N * OC), *d_pre = dmalloc<floatX>((size_t)N * OC);
    bool no_algorithm = false;   // the epilogue itself, not the trainer's fallback
    matmul_cublaslt(ctx, d_out, CUDA_R_16BF, OC, 0, d_w, true, C, 0, d_inp, false, C, 0,
                    OC, N, C, 1, 1.0f, 0.0f, d_b, d_pre, OC, &no_algorithm);
    if (no_algorithm) {
        printf("  %-44s SKIP: this cuBLASLt has no algorithm for GELU_AUX_BIAS (the trainer falls back)\n", "forward, GELU_AUX_BIAS");
        return;
    }
    std::vector<double> pre, mag;
    ref_linear(pre, mag, inp, w, &bias, N, C, OC);
    LtOutput p = make_output("forward, GELU_AUX_BIAS: pre-activation", download(d_pre, pre.size()), pre, mag, C + 1, true);
    std::vector<double> g(pre.size());
    for (size_t i = 0; i < pre.size(); i++) g[i] = gelu_ref(pre[i]);
    LtOutput o = make_output("forward, GELU_AUX_BIAS: gelu output", download(d_out, g.size()), g, mag, C + 1, true);
    for (size_t i = 0; i < g.size(); i++) o.tol[i] += TANH_TOL * (float)fabs(g[i]) + 1.2f * accum_tol(C + 1, mag[i]);
    outs.push_back(p);
    outs.push_back(o);
    cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_b));
    cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_pre));
}

// matmul_backward: dinp (bf16, overwritten) and dweight accumulated into GradT (fp32 or bf16), fcproj's
// shapes (C_in = 4C, OC = C)
template<typename GradT>
static void case_backward(std::vector<LtOutput>& outs, const MatmulContext* ctx, Rng* rng, bool with_dinp) {
    int Cin = 4 * C, OC = C;
    std::vector<float> dout = rand_bf16((size_t)N * OC, -1.0f, 1.0f, rng), inp = rand_bf16((size_t)N * Cin, -1.0f, 1.0f, rng);
    std::vector<float> w = rand_bf16((size_t)OC * Cin, -0.1f, 0.1f, rng);
    std::vector<float> dw0 = as_precision<GradT>(rand_f32((size_t)OC * Cin, -1.0f, 1.0f, rng));
    floatX *d_dout = to_device_bf16(dout), *d_inp = to_device_bf16(inp), *d_w = to_device_bf16(w);
    floatX* d_dinp = dmalloc<floatX>((size_t)N * Cin);
    GradT* d_dw = to_device<GradT>(dw0);
    matmul_backward<GradT>(with_dinp ? d_dinp : NULL, d_dw, NULL, d_dout, d_inp, d_w, N, Cin, OC, NULL, ctx);
    std::vector<double> exact, mag;
    if (with_dinp) {   // dinp (N,Cin) = dout (N,OC) . w (OC,Cin)
        ref_gemm(exact, mag, dout.data(), OC, 1, w.data(), Cin, 1, NULL, N, Cin, OC);
        outs.push_back(make_output("backward, dinp (beta 0)", download(d_dinp, exact.size()), exact, mag, OC, true));
    }
    // dweight (OC,Cin) = dw0 + dout^T (OC,N) . inp (N,Cin)
    ref_gemm(exact, mag, dout.data(), 1, OC, inp.data(), Cin, 1, dw0.data(), OC, Cin, N);
    char name[48];
    snprintf(name, sizeof(name), "backward, dweight += (beta 1, %s)", type_name<GradT>());
    outs.push_back(make_output(name, download(d_dw, exact.size()), exact, mag, N + 1, sizeof(GradT) == 2));
    cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_w));
    cudaCheck(cudaFree(d_dinp)); cudaCheck(cudaFree(d_dw));
}

// The attention's batched GEMMs, with the argument patterns of llmc/cuda_attention.cuh. Per batch
// (B*NH of them), row-major: x (T,HS), y (T,HS), p (T,T).
//   "A^T B": p[t][s] = sum_d y[t][d] x[s][d]          (preatt from q, k; datt from dy, v)
//   "A B"  : o[t][d] = sum_s p[t][s] x[s][d]          (y from att, v; dq from datt, k)
//   "A B^T": o[s][d] = sum_t p[t][s] y[t][d]          (dv from att, dy; dk from datt, q)
static void case_attention(std::vector<LtOutput>& outs, const MatmulContext* ctx, Rng* rng) {
    const int BNH = B * NH;
    const long long sTT = (long long)T * T, sTh = (long long)T * HS;
    std::vector<float> x = rand_bf16((size_t)BNH * sTh, -1.0f, 1.0f, rng), y = rand_bf16((size_t)BNH * sTh, -1.0f, 1.0f, rng);
    std::vector<float> p = rand_bf16((size_t)BNH * sTT, 0.0f, 0.1f, rng);
    floatX *d_x = to_device_bf16(x), *d_y = to_device_bf16(y), *d_p = to_device_bf16(p);
    floatX *d_pt = dmalloc<floatX>((size_t)BNH * sTT), *d_o1 = dmalloc<floatX>((size_t)BNH * sTh), *d_o2 = dmalloc<floatX>((size_t)BNH * sTh);
    // as attention_forward's preatt: column-major p^T (s,t) = x (s,d) . y^T (d,t)
    matmul_cublaslt(ctx, d_pt, CUDA_R_16BF, T, sTT, d_x, true, HS, sTh, d_y, false, HS, sTh, T, T, HS, BNH, 1.0f, 0.0f, NULL, NULL, 0);
    // as attention_forward's y: o^T (d,t) = x^T (d,s) . p^T (s,t)
    matmul_cublaslt(ctx, d_o1, CUDA_R_16BF, HS, sTh, d_x, false, HS, sTh, d_p, false, T, sTT, HS, T, T, BNH, 1.0f, 0.0f, NULL, NULL, 0);
    // as attention_backward's dv: o^T (d,s) = y^T (d,t) . p (t,s)
    matmul_cublaslt(ctx, d_o2, CUDA_R_16BF, HS, sTh, d_y, false, HS, sTh, d_p, true, T, sTT, HS, T, T, BNH, 1.0f, 0.0f, NULL, NULL, 0);
    std::vector<double> e1, m1, e2, m2, e3, m3, e, m;
    for (int b = 0; b < BNH; b++) {
        const float *xb = x.data() + b * sTh, *yb = y.data() + b * sTh, *pb = p.data() + b * sTT;
        ref_gemm(e, m, yb, HS, 1, xb, 1, HS, NULL, T, T, HS);   // p[t][s] = sum_d y[t][d] x[s][d]
        e1.insert(e1.end(), e.begin(), e.end()); m1.insert(m1.end(), m.begin(), m.end());
        ref_gemm(e, m, pb, T, 1, xb, HS, 1, NULL, T, HS, T);    // o[t][d] = sum_s p[t][s] x[s][d]
        e2.insert(e2.end(), e.begin(), e.end()); m2.insert(m2.end(), m.begin(), m.end());
        ref_gemm(e, m, pb, 1, T, yb, HS, 1, NULL, T, HS, T);    // o[s][d] = sum_t p[t][s] y[t][d]
        e3.insert(e3.end(), e.begin(), e.end()); m3.insert(m3.end(), m.begin(), m.end());
    }
    outs.push_back(make_output("attention, batched A^T B (preatt, datt)", download(d_pt, e1.size()), e1, m1, HS, true));
    outs.push_back(make_output("attention, batched A B (y, dq)", download(d_o1, e2.size()), e2, m2, T, true));
    outs.push_back(make_output("attention, batched A B^T (dv, dk)", download(d_o2, e3.size()), e3, m3, T, true));
    cudaCheck(cudaFree(d_x)); cudaCheck(cudaFree(d_y)); cudaCheck(cudaFree(d_p));
    cudaCheck(cudaFree(d_pt)); cudaCheck(cudaFree(d_o1)); cudaCheck(cudaFree(d_o2));
}

// ----------------------------------------------------------------------------
// checks and the file of outputs

// |a - b| <= scale * tol element by element; prints one line, returns the number of failures
static size_t check_within(const char* what, const LtOutput& o, const std::vector<float>& other, float scale) {
    size_t bad = 0, worst = 0;
    double worst_ratio = 0.0;
    for (size_t i = 0; i < o.got.size(); i++) {
        double err = fabs((double)o.got[i] - (double)other[i]), tol = scale * o.tol[i];
        double ratio = isnan(err) ? INFINITY : err / (tol > 0 ? tol : 1e-30);
        if (ratio > worst_ratio) { worst_ratio = ratio; worst = i; }
        if (!(err <= tol)) bad++;
    }
    printf("  %-44s %-8s %s  worst err/tol %.3f (at %zu: %.6g vs %.6g)\n", o.name, what, bad ? "FAIL" : "ok  ",
           worst_ratio, worst, o.got[worst], other[worst]);
    return bad;
}

static void write_outputs(const char* path, const std::vector<LtOutput>& outs) {
    FILE* f = fopen(path, "wb");
    if (f == NULL) { fprintf(stderr, "error: cannot write '%s': %s\n", path, strerror(errno)); exit(1); }
    uint32_t head[2] = { LT_FILE_MAGIC, (uint32_t)outs.size() };
    bool ok = fwrite(head, sizeof(head), 1, f) == 1;
    for (const LtOutput& o : outs) {
        uint64_t n = o.got.size();
        ok = ok && fwrite(o.name, sizeof(o.name), 1, f) == 1 && fwrite(&n, sizeof(n), 1, f) == 1 &&
             fwrite(o.got.data(), sizeof(float), n, f) == n;
    }
    if (fclose(f) != 0 || !ok) { fprintf(stderr, "error: writing '%s' failed\n", path); exit(1); }
    printf("wrote %zu outputs to %s\n", outs.size(), path);
}

// the other build's outputs, case by case; exits with a message if the file does not match the cases
static std::vector<std::vector<float>> read_outputs(const char* path, const std::vector<LtOutput>& outs) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) { fprintf(stderr, "error: cannot open '%s': %s\n", path, strerror(errno)); exit(1); }
    uint32_t head[2];
    if (fread(head, sizeof(head), 1, f) != 1 || head[0] != LT_FILE_MAGIC || head[1] != outs.size()) {
        fprintf(stderr, "error: '%s' is not an output file of these %zu cases\n", path, outs.size());
        exit(1);
    }
    std::vector<std::vector<float>> other;
    for (const LtOutput& o : outs) {
        char name[sizeof(o.name)];
        uint64_t n = 0;
        if (fread(name, sizeof(name), 1, f) != 1 || fread(&n, sizeof(n), 1, f) != 1 ||
            strncmp(name, o.name, sizeof(name)) != 0 || n != o.got.size()) {
            fprintf(stderr, "error: '%s' does not hold case '%s' with %zu values next\n", path, o.name, o.got.size());
            exit(1);
        }
        std::vector<float> v(n);
        if (fread(v.data(), sizeof(float), n, f) != n) { fprintf(stderr, "error: '%s' is truncated\n", path); exit(1); }
        other.push_back(v);
    }
    fclose(f);
    return other;
}

int main(int argc, char** argv) {
    const char* mode = argc > 1 ? argv[1] : "";
    bool write = strcmp(mode, "write") == 0, compare = strcmp(mode, "compare") == 0;
    if (!(argc == 1 || (argc == 3 && (write || compare)))) {
        fprintf(stderr, "usage: %s [write FILE | compare FILE]\n", argv[0]);
        return 1;
    }
    print_device_info();
    cudaStream_t stream;
    cudaCheck(cudaStreamCreate(&stream));
    MatmulContext ctx = matmul_context_create(stream, 32u << 20);
    Rng rng = rng_create(2024);
    std::vector<LtOutput> outs;
    case_forward(outs, &ctx, &rng, true);
    case_forward(outs, &ctx, &rng, false);
    case_forward_gelu(outs, &ctx, &rng);
    case_backward<floatX>(outs, &ctx, &rng, true);
    case_backward<float>(outs, &ctx, &rng, false);
    case_attention(outs, &ctx, &rng);
    cudaCheck(cudaStreamSynchronize(stream));

    size_t bad = 0;
    printf("against exact values (tolerance tol):\n");
    for (const LtOutput& o : outs) bad += check_within("exact", o, o.exact, 1.0f);
    if (write) write_outputs(argv[2], outs);
    if (compare) {
        printf("against the other build's outputs in %s (tolerance 2 tol):\n", argv[2]);
        std::vector<std::vector<float>> other = read_outputs(argv[2], outs);
        for (size_t i = 0; i < outs.size(); i++) bad += check_within("other", outs[i], other[i], 2.0f);
    }
    matmul_context_destroy(&ctx);
    cudaCheck(cudaStreamDestroy(stream));
    printf("cublaslt_standin: %s\n", bad ? "FAILED" : "ALL OK");
    return bad ? 1 : 0;
}
