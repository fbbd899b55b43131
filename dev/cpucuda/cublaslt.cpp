// cublaslt.cpp: a CPU stand-in for the cuBLASLt calls of llmc/cuda_matmul.cuh (and the attention's
// batched matmuls). It encodes our reading of the API, so it checks what that reading says the real
// library would refuse (shapes, leading dimensions, epilogue attributes, the alignment promised to
// the heuristic) and computes D = alpha op(A) op(B) + beta C [+ bias] [-> GELU, with the pre-GELU
// value to the aux buffer], column-major as cuBLAS, with fp32 sums (eight interleaved partial sums).
// Types: A and B both bf16 (the trainer) or both fp32 (the fp32 build); C and D bf16 or fp32.
// What it cannot show: which combinations the real library has no algorithm for, and its summation
// order (dev/gpu_session.sh compares the two once a GPU is lent).
#include "cpucuda.h"
#include <vector>

namespace {
struct LtDesc {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
    const void* bias = nullptr;
    cudaDataType_t bias_type = CUDA_R_32F;
    bool bias_type_set = false;
    void* aux = nullptr;
    int64_t aux_ld = 0;
};
struct LtLayout { cudaDataType_t type; uint64_t rows, cols; int64_t ld; int32_t batch = 1; int64_t stride = 0; };
struct LtPref { uint64_t workspace = 0; uint32_t align[4] = {256, 256, 256, 256}; };
const uint64_t ALGO_TAG = 0xC0C0C0C0ull;   // marks an algo this stand-in's heuristic returned

template<typename T> bool set_attr(T& dst, const void* buf, size_t n) {
    if (!buf || n != sizeof(T)) return false;
    memcpy(&dst, buf, sizeof(T));
    return true;
}
size_t dtype_size(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }
float load_elem(const void* p, cudaDataType_t t, size_t i) {
    if (t == CUDA_R_32F) return static_cast<const float*>(p)[i];
    return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
}
void store_elem(void* p, cudaDataType_t t, size_t i, float v) {
    if (t == CUDA_R_32F) static_cast<float*>(p)[i] = v;
    else static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
}
float gelu_tanh(float x) {
    float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
}
// eight partial sums in a fixed order, then added pairwise: the same bits at every optimization
// level and with or without AddressSanitizer (a plain reduction would be reordered by the vectorizer)
float dot(const float* a, const float* b, int64_t k) {
    float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t p = 0;
    for (; p + 8 <= k; p += 8)
        for (int l = 0; l < 8; l++) part[l] += a[p + l] * b[p + l];
    for (int l = 0; p < k; p++, l++) part[l] += a[p] * b[p];
    return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}
bool is_float_type(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16BF; }
bool has_bias(int e) { return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS; }
bool has_aux(int e) { return e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS; }

// the checks on which a real heuristic would return no algorithm (a subset of cuBLASLt's)
cublasStatus_t check_problem(const LtDesc& d, const LtLayout& a, const LtLayout& b, const LtLayout& c, const LtLayout& dd) {
    if (d.compute != CUBLAS_COMPUTE_32F || d.scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (a.type != b.type || !is_float_type(a.type) || !is_float_type(dd.type) || c.type != dd.type) return CUBLAS_STATUS_NOT_SUPPORTED;
    const uint64_t m = dd.rows, n = dd.cols;
    const uint64_t am = d.ta == CUBLAS_OP_T ? a.cols : a.rows, ak = d.ta == CUBLAS_OP_T ? a.rows : a.cols;
    const uint64_t bk = d.tb == CUBLAS_OP_T ? b.cols : b.rows, bn = d.tb == CUBLAS_OP_T ? b.rows : b.cols;
    if (am != m || bn != n || ak != bk || c.rows != m || c.cols != n) return CUBLAS_STATUS_INVALID_VALUE;
    if ((uint64_t)a.ld < a.rows || (uint64_t)b.ld < b.rows || (uint64_t)c.ld < c.rows || (uint64_t)dd.ld < dd.rows) return CUBLAS_STATUS_INVALID_VALUE;
    if (a.batch != dd.batch || b.batch != dd.batch || c.batch != dd.batch) return CUBLAS_STATUS_INVALID_VALUE;
    const int e = (int)d.epi;
    if (!(e == CUBLASLT_EPILOGUE_DEFAULT || has_bias(e) || has_aux(e))) return CUBLAS_STATUS_NOT_SUPPORTED;   // not in the stand-in
    if (has_bias(e) && (!d.bias || (d.bias_type_set && !is_float_type(d.bias_type)))) return CUBLAS_STATUS_INVALID_VALUE;
    if (has_aux(e) && (!d.aux || d.aux_ld < (int64_t)m || d.aux_ld % 8 != 0 || dd.batch != 1)) return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

// a GPU faults or computes garbage on operands less aligned than the heuristic was promised
void check_alignment(const cublasLtMatmulAlgo_t* algo, const void* const ptrs[4], const LtLayout* const lay[4]) {
    if (!algo || algo->data[7] != ALGO_TAG) return;
    for (int i = 0; i < 4; i++) {
        uintptr_t x = (uintptr_t)ptrs[i];
        if (lay[i]->batch > 1) x |= (uintptr_t)(lay[i]->stride * (int64_t)dtype_size(lay[i]->type));
        if (algo->data[i] && x % algo->data[i] != 0)
            cpucuda::fatal("cublasLtMatmul: operand %c is %zu-byte aligned, less than the %llu bytes promised to the heuristic",
                           "ABCD"[i], (size_t)(x & -x), (unsigned long long)algo->data[i]);
    }
}
} // namespace

extern "C" {

const char* cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
        case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
        default: return "CUBLAS_STATUS_(other, cpucuda)";
    }
}
cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) { *h = reinterpret_cast<cublasLtHandle_t>(new char(1)); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) { delete reinterpret_cast<char*>(h); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t c, cudaDataType_t s) {
    LtDesc* x = new LtDesc();
    x->compute = c;
    x->scale = s;
    *d = reinterpret_cast<cublasLtMatmulDesc_t>(x);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) { delete reinterpret_cast<LtDesc*>(d); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t dd, cublasLtMatmulDescAttributes_t a, const void* buf, size_t n) {
    LtDesc& d = *reinterpret_cast<LtDesc*>(dd);
    bool ok;
    int32_t i32 = 0;
    uint32_t u32 = 0;
    switch (a) {
        case CUBLASLT_MATMUL_DESC_TRANSA: ok = set_attr(i32, buf, n); d.ta = (cublasOperation_t)i32; break;
        case CUBLASLT_MATMUL_DESC_TRANSB: ok = set_attr(i32, buf, n); d.tb = (cublasOperation_t)i32; break;
        case CUBLASLT_MATMUL_DESC_EPILOGUE: ok = set_attr(u32, buf, n); d.epi = (cublasLtEpilogue_t)u32; break;
        case CUBLASLT_MATMUL_DESC_BIAS_POINTER: ok = set_attr(d.bias, buf, n); break;
        case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: ok = set_attr(i32, buf, n); d.bias_type = (cudaDataType_t)i32; d.bias_type_set = true; break;
        case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: ok = set_attr(d.aux, buf, n); break;
        case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: ok = set_attr(d.aux_ld, buf, n); break;
        default: return CUBLAS_STATUS_NOT_SUPPORTED;   // an attribute the stand-in does not know
    }
    return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType t, uint64_t rows, uint64_t cols, int64_t ld) {
    LtLayout* x = new LtLayout();
    x->type = t; x->rows = rows; x->cols = cols; x->ld = ld;
    *l = reinterpret_cast<cublasLtMatrixLayout_t>(x);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) { delete reinterpret_cast<LtLayout*>(l); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t ll, cublasLtMatrixLayoutAttribute_t a, const void* buf, size_t n) {
    LtLayout& l = *reinterpret_cast<LtLayout*>(ll);
    bool ok;
    switch (a) {
        case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: ok = set_attr(l.batch, buf, n); break;
        case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: ok = set_attr(l.stride, buf, n); break;
        default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
    *p = reinterpret_cast<cublasLtMatmulPreference_t>(new LtPref());
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) { delete reinterpret_cast<LtPref*>(p); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pp, cublasLtMatmulPreferenceAttributes_t a, const void* buf, size_t n) {
    LtPref& p = *reinterpret_cast<LtPref*>(pp);
    bool ok;
    switch (a) {
        case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: ok = set_attr(p.workspace, buf, n); break;
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: ok = set_attr(p.align[0], buf, n); break;
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: ok = set_attr(p.align[1], buf, n); break;
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: ok = set_attr(p.align[2], buf, n); break;
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: ok = set_attr(p.align[3], buf, n); break;
        default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}
// One "algorithm" per supported problem; it remembers the alignments the caller promised, and
// cublasLtMatmul checks the real pointers against them. CPUCUDA_LT_REFUSE_EPILOGUE=1 makes it find
// none for the GELU epilogues, as a real library may: the trainer's fallback is then exercised.
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dd, cublasLtMatmulPreference_t p, int req,
                                              cublasLtMatmulHeuristicResult_t res[], int* count) {
    if (req <= 0) return CUBLAS_STATUS_INVALID_VALUE;
    const LtDesc& desc = *reinterpret_cast<LtDesc*>(d);
    cublasStatus_t s = check_problem(desc, *reinterpret_cast<LtLayout*>(a), *reinterpret_cast<LtLayout*>(b),
                                     *reinterpret_cast<LtLayout*>(c), *reinterpret_cast<LtLayout*>(dd));
    const char* refuse = getenv("CPUCUDA_LT_REFUSE_EPILOGUE");
    if (s == CUBLAS_STATUS_SUCCESS && refuse && *refuse == '1' && has_aux((int)desc.epi)) s = CUBLAS_STATUS_NOT_SUPPORTED;
    if (s != CUBLAS_STATUS_SUCCESS) { *count = 0; return CUBLAS_STATUS_NOT_SUPPORTED; }
    memset(&res[0], 0, sizeof(res[0]));
    const LtPref& pr = *reinterpret_cast<LtPref*>(p);
    for (int i = 0; i < 4; i++) res[0].algo.data[i] = pr.align[i];
    res[0].algo.data[7] = ALGO_TAG;
    res[0].state = CUBLAS_STATUS_SUCCESS;
    res[0].wavesCount = 1.0f;
    *count = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t dsc, const void* alpha_p, const void* A, cublasLtMatrixLayout_t Al,
                              const void* B, cublasLtMatrixLayout_t Bl, const void* beta_p, const void* C, cublasLtMatrixLayout_t Cl,
                              void* D, cublasLtMatrixLayout_t Dl, const cublasLtMatmulAlgo_t* algo, void*, size_t, cudaStream_t) {
    const LtDesc& d = *reinterpret_cast<LtDesc*>(dsc);
    const LtLayout &a = *reinterpret_cast<LtLayout*>(Al), &b = *reinterpret_cast<LtLayout*>(Bl),
                   &c = *reinterpret_cast<LtLayout*>(Cl), &dl = *reinterpret_cast<LtLayout*>(Dl);
    cublasStatus_t s = check_problem(d, a, b, c, dl);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    const void* ptrs[4] = {A, B, C, D};
    const LtLayout* lays[4] = {&a, &b, &c, &dl};
    check_alignment(algo, ptrs, lays);
    const float alpha = *static_cast<const float*>(alpha_p), beta = *static_cast<const float*>(beta_p);
    const int64_t m = (int64_t)dl.rows, n = (int64_t)dl.cols;
    const int64_t k = (int64_t)(d.ta == CUBLAS_OP_T ? a.rows : a.cols);
    const int e = (int)d.epi;
    const cudaDataType_t bias_type = d.bias_type_set ? d.bias_type : dl.type;
    std::vector<float> Am((size_t)m * k), Bn((size_t)n * k);   // op(A) as m rows of k, op(B)^T as n rows of k
    for (int bt = 0; bt < dl.batch; bt++) {
        const char* Ab = static_cast<const char*>(A) + (size_t)bt * a.stride * dtype_size(a.type);
        const char* Bb = static_cast<const char*>(B) + (size_t)bt * b.stride * dtype_size(b.type);
        const char* Cb = static_cast<const char*>(C) + (size_t)bt * c.stride * dtype_size(c.type);
        char* Db = static_cast<char*>(D) + (size_t)bt * dl.stride * dtype_size(dl.type);
        #pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < m; i++)
            for (int64_t p = 0; p < k; p++)
                Am[(size_t)i * k + p] = load_elem(Ab, a.type, d.ta == CUBLAS_OP_T ? (size_t)(p + i * a.ld) : (size_t)(i + p * a.ld));
        #pragma omp parallel for schedule(static)
        for (int64_t j = 0; j < n; j++)
            for (int64_t p = 0; p < k; p++)
                Bn[(size_t)j * k + p] = load_elem(Bb, b.type, d.tb == CUBLAS_OP_T ? (size_t)(j + p * b.ld) : (size_t)(p + j * b.ld));
        #pragma omp parallel for schedule(dynamic, 4)
        for (int64_t j = 0; j < n; j++) {
            const float* bj = &Bn[(size_t)j * k];
            for (int64_t i = 0; i < m; i++) {
                const float* ai = &Am[(size_t)i * k];
                float v = alpha * dot(ai, bj, k);
                if (beta != 0.0f) v += beta * load_elem(Cb, c.type, (size_t)(i + j * c.ld));
                if (has_bias(e)) v += load_elem(d.bias, bias_type, (size_t)i);
                if (has_aux(e)) {
                    store_elem(d.aux, dl.type, (size_t)(i + j * d.aux_ld), v);
                    v = gelu_tanh(v);
                }
                store_elem(Db, dl.type, (size_t)(i + j * dl.ld), v);
            }
        }
    }
    return CUBLAS_STATUS_SUCCESS;
}

} // extern "C"
