/*
Test of fused_classifier and sum_losses (llmc/cuda_classifier.cuh).

Versions
  llmc : fused_classifier at block sizes 32..1024 (the CPU reference plays the naive role), on both of
         its paths: 128-bit packs (Vp % x128::size == 0, logits 16-byte aligned) and one column at a time
Cases (the harness checks that the launcher picks the path named in the label)
  128-bit: V=50257 Vp=50304 (GPT-2; 512 rows), V=61 Vp=64 (a pack straddles V), V=64 Vp=64 (no
           padding), V=5 Vp=8 (one pack per row: most threads see no column)
  scalar : Vp odd (V=100 Vp=101), logits one element past an aligned address (V=61 Vp=64, and GPT-2's
           V=50257 Vp=50304 on a few rows)
Checks, in every case
  - losses[i] = -log softmax(logits[i, :V])[target] for valid targets, exactly 0 for target -1
  - dlogits written in place: softmax - onehot over the first V columns, exactly 0 in the padded
    columns V..Vp-1 (which hold garbage up to +-100 that must not matter) and in masked rows (about a
    quarter of the rows have target -1; rows 0, 1, 2 have targets 0, V-1, -1)
  - in the small cases row 3 has target V (out of range): its loss is NaN, its gradient row 0
  - two runs give the same bits (losses and dlogits)
And sum_losses (= and +=) equals the double sum of the GPU's own losses; two runs give the same bits.
Tolerance: exact values in double. The GPU's sum of exp has a relative error of at most
rel_s = 6 u (V / 32 + 64), u = 2^-24: each thread adds up to V/block_size + x128::size terms
(block_size >= 32), each exp and add costing <= 6u (also with --use_fast_math), and the warp/block
combination adds 36 more steps; x128::size + 36 < 64. rel_s is about 6e-4 at V = 50257 (the worst
case; in practice errors are ~1e-5).
  loss    : rel_s + 4e-6 absolute (log s turns the relative error of s into an absolute one)
  dlogits : 2^-7 |ref| (bf16 rounding) + rel_s p + 1e-6
  sum     : 1e-9 relative (double)
*/
#include "common.h"
#include "../../llmc/cuda_classifier.cuh"

static const int block_sizes[] = {32, 64, 128, 256, 512, 1024};

// One case: BT rows of width Vp (V valid), logits at `offset` elements past an aligned allocation.
// expect_vec: the columns per access the launcher must choose (x128::size or 1). With bad_target, row 3
// gets target V. Returns the losses of the last run (for the sum_losses checks).
static std::vector<float> run_case(const char* label, Rng* rng, int BT, int V, int Vp, int offset, int expect_vec,
                                   bool bad_target) {
    std::vector<float> logits = rand_bf16((size_t)BT * Vp, -4.0f, 4.0f, rng);
    for (int i = 0; i < BT; i++)   // the padded columns hold garbage, they must not matter
        for (int c = V; c < Vp; c++) { logits[(size_t)i * Vp + c] = bf16_round(rng_range(rng, -100.0f, 100.0f)); }
    std::vector<int> targets(BT);
    for (int i = 0; i < BT; i++) { targets[i] = (rng_u32(rng) % 4 == 0) ? -1 : rng_int(rng, 0, V); }
    targets[0] = 0; targets[1] = V - 1; targets[2] = -1;   // the edges
    const int bad_row = bad_target ? 3 : -1;
    if (bad_target) { targets[bad_row] = V; }

    // reference; the out-of-range row is a masked row but for its loss (NaN, checked separately)
    std::vector<float> ref_loss(BT, 0.0f), ref_dlogits((size_t)BT * Vp, 0.0f), tol_dlogits((size_t)BT * Vp, 0.0f);
    const float rel_s = 6.0f * FP32_EPS * (V / 32 + 64);
    for (int i = 0; i < BT; i++) {
        if (targets[i] < 0 || targets[i] >= V) { continue; }
        const float* x = &logits[(size_t)i * Vp];
        double m = -1e300, s = 0.0;
        for (int c = 0; c < V; c++) { m = fmax(m, (double)x[c]); }
        for (int c = 0; c < V; c++) { s += exp(x[c] - m); }
        ref_loss[i] = (float)(log(s) + m - x[targets[i]]);
        for (int c = 0; c < V; c++) {
            const double p = exp(x[c] - m) / s;
            ref_dlogits[(size_t)i * Vp + c] = (float)(p - (c == targets[i] ? 1.0 : 0.0));
            tol_dlogits[(size_t)i * Vp + c] = (float)(rel_s * p);
        }
    }
    const float tol_loss = rel_s + 4e-6f;

    floatX* base = dmalloc<floatX>((size_t)BT * Vp + offset);
    floatX* base2 = dmalloc<floatX>((size_t)BT * Vp + offset);
    floatX* d_logits = base + offset;
    floatX* d_logits2 = base2 + offset;
    float* d_losses = dmalloc<float>(BT);
    float* d_losses2 = dmalloc<float>(BT);
    int* d_targets = to_device_int(targets);
    char name[192];
    const int vec = fused_classifier_vec(d_logits, Vp);
    const bool path_ok = vec == expect_vec;
    printf("  %-44s %s  %d column(s) per access (expected %d)\n", label, path_ok ? "ok  " : "FAIL", vec, expect_vec);
    if (!path_ok) { exit(EXIT_FAILURE); }

    for (int bs : block_sizes) {

        if (quick_skip(bs, block_sizes)) { continue; }
        upload(d_logits, logits);
        cudaCheck(cudaMemset(d_losses, 0xff, BT * sizeof(float)));   // NaN: every loss must be written
        fused_classifier(d_logits, d_losses, d_targets, BT, V, Vp, 0, bs);
        std::vector<float> got = download(d_losses, BT);
        if (bad_row >= 0) {   // target V: a NaN loss (and a zero row, checked with dlogits below)
            snprintf(name, sizeof(name), "%s block %d target V: NaN loss", label, bs);
            const bool nan_ok = isnan(got[bad_row]);
            printf("  %-44s %s  loss %g\n", name, nan_ok ? "ok  " : "FAIL", got[bad_row]);
            if (!nan_ok) { exit(EXIT_FAILURE); }
            got[bad_row] = 0.0f;
        }
        snprintf(name, sizeof(name), "%s block %d losses", label, bs);  validate_host(name, got, ref_loss, 0.0f, tol_loss);
        snprintf(name, sizeof(name), "%s block %d dlogits", label, bs); validate(name, d_logits, ref_dlogits, BF16_RTOL, 1e-6f, &tol_dlogits);
    }
    // the same bits twice
    upload(d_logits, logits);
    upload(d_logits2, logits);
    fused_classifier(d_logits, d_losses, d_targets, BT, V, Vp, 0);
    fused_classifier(d_logits2, d_losses2, d_targets, BT, V, Vp, 0);
    snprintf(name, sizeof(name), "%s determinism dlogits", label); check_bitwise_equal(name, d_logits, d_logits2, (size_t)BT * Vp * sizeof(floatX));
    snprintf(name, sizeof(name), "%s determinism losses", label);  check_bitwise_equal(name, d_losses, d_losses2, BT * sizeof(float));
    std::vector<float> losses = download(d_losses, BT);
    cudaCheck(cudaFree(base)); cudaCheck(cudaFree(base2)); cudaCheck(cudaFree(d_losses)); cudaCheck(cudaFree(d_losses2));
    cudaCheck(cudaFree(d_targets));
    return losses;
}

int main() {
    print_device_info();
    const int V = 50257, Vp = 50304;
    Rng rng = rng_create(11);
    const int P = x128::size;

    printf("validation\n");
    std::vector<float> gpt2_losses = quick_mode() ? run_case("V=50257 Vp=50304 BT=16 (128-bit)", &rng, 16, V, Vp, 0, P, false)
                                                  : run_case("V=50257 Vp=50304 BT=512 (128-bit)", &rng, 512, V, Vp, 0, P, false);
    run_case("V=61 Vp=64 BT=64 (128-bit, pack straddles V)", &rng, 64, 61, 64, 0, P, true);
    run_case("V=64 Vp=64 BT=16 (128-bit, no padding)", &rng, 16, 64, 64, 0, P, true);
    run_case("V=5 Vp=8 BT=16 (128-bit, one pack per row)", &rng, 16, 5, 8, 0, P, true);
    run_case("V=100 Vp=101 BT=64 (scalar: Vp odd)", &rng, 64, 100, 101, 0, 1, true);
    run_case("V=61 Vp=64 BT=64 (scalar: logits + 1)", &rng, 64, 61, 64, 1, 1, true);
    run_case("V=50257 Vp=50304 BT=8 (scalar: logits + 1)", &rng, 8, V, Vp, 1, 1, true);

    // sum_losses: against the double sum of the GPU's own losses, in both modes, and reproducible
    const int BT = (int)gpt2_losses.size();
    float* d_losses = to_device_f32(gpt2_losses);
    double* d_sum = dmalloc<double>(1);
    double* d_sum2 = dmalloc<double>(1);
    {
        double expect = 0.0;
        for (int i = 0; i < BT; i++) { expect += gpt2_losses[i]; }
        sum_losses(d_sum, d_losses, BT, 0, 0);
        double got = 0.0;
        cudaCheck(cudaMemcpy(&got, d_sum, sizeof(double), cudaMemcpyDeviceToHost));
        bool ok = fabs(got - expect) <= 1e-9 * fabs(expect);
        printf("  %-44s %s  got %.12g expected %.12g\n", "sum_losses (=)", ok ? "ok  " : "FAIL", got, expect);
        if (!ok) { exit(EXIT_FAILURE); }
        sum_losses(d_sum, d_losses, BT, 1, 0);   // += : now twice the sum
        cudaCheck(cudaMemcpy(&got, d_sum, sizeof(double), cudaMemcpyDeviceToHost));
        ok = fabs(got - 2.0 * expect) <= 2e-9 * fabs(expect);
        printf("  %-44s %s  got %.12g expected %.12g\n", "sum_losses (+=)", ok ? "ok  " : "FAIL", got, 2.0 * expect);
        if (!ok) { exit(EXIT_FAILURE); }
        sum_losses(d_sum, d_losses, BT, 0, 0);
        sum_losses(d_sum2, d_losses, BT, 0, 0);
        check_bitwise_equal("sum_losses determinism", d_sum, d_sum2, sizeof(double));
    }
    cudaCheck(cudaFree(d_losses));

    // benchmark at B*T = 8192
    const int BTb = 8192;
    if (skip_benchmarks("classifier")) { return 0; }
    printf("benchmark (BT=%d; bytes: logits read twice, dlogits written)\n", BTb);
    floatX* d_lb = dmalloc<floatX>((size_t)BTb * Vp + 1);   // + 1: the scalar path's run at logits + 1
    float* d_lossb = dmalloc<float>(BTb);
    std::vector<int> tb(BTb);
    for (auto& t : tb) { t = rng_int(&rng, 0, V); }
    int* d_tb = to_device_int(tb);
    upload(d_lb, rand_bf16((size_t)BTb * Vp, -4.0f, 4.0f, &rng));
    const double bytes = 3.0 * BTb * (double)Vp * sizeof(floatX);
    for (int bs : block_sizes) {
        float ms = benchmark_ms(10, [&]() { fused_classifier(d_lb, d_lossb, d_tb, BTb, V, Vp, 0, bs); });
        print_benchmark("fused_classifier (128-bit)", bs, ms, bytes, 0);
    }
    for (int bs : {256, 1024}) {
        float ms = benchmark_ms(10, [&]() { fused_classifier(d_lb + 1, d_lossb, d_tb, BTb, V, Vp, 0, bs); });
        print_benchmark("fused_classifier (scalar: logits + 1)", bs, ms, bytes, 0);
    }
    float ms = benchmark_ms(20, [&]() { sum_losses(d_sum, d_lossb, BTb, 0, 0); });
    print_benchmark("sum_losses", 1024, ms, BTb * sizeof(float), 0);
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaFree(d_lb)); cudaCheck(cudaFree(d_lossb)); cudaCheck(cudaFree(d_tb)); cudaCheck(cudaFree(d_sum)); cudaCheck(cudaFree(d_sum2));
    printf("classifier: ALL OK\n");
    return 0;
}
