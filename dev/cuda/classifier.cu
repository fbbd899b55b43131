/*
Test of fused_classifier and sum_losses (llmc/cuda_classifier.cuh).

Versions
  llmc : fused_classifier at block sizes 32..1024 (the CPU reference plays the naive role)
Checks
  - losses[i] = -log softmax(logits[i, :V])[target] for valid targets, exactly 0 for target -1
  - dlogits written in place: softmax - onehot over the first V columns, exactly 0 in the padded
    columns V..Vp-1 and in masked rows (about a quarter of the rows have target -1)
  - sum_losses (= and +=) equals the double sum of the GPU's own losses; two runs give the same bits
Tolerance: exact values in double. The GPU's sum of exp has a relative error of at most
rel_s = 6 u (V / 32 + 64), u = 2^-24: each thread adds up to V/block_size terms (block_size >= 32), each
exp and add costing <= 6u (also with --use_fast_math), and the warp/block combination adds < 64 more
steps. rel_s is about 6e-4 (the worst case; in practice errors are ~1e-5).
  loss    : rel_s + 4e-6 absolute (log s turns the relative error of s into an absolute one)
  dlogits : 2^-7 |ref| (bf16 rounding) + rel_s p + 1e-6
  sum     : 1e-9 relative (double)
*/
#include "common.h"
#include "../../llmc/cuda_classifier.cuh"

int main() {
    print_device_info();
    const int V = 50257, Vp = 50304;
    Rng rng = rng_create(11);
    const int block_sizes[] = {32, 64, 128, 256, 512, 1024};

    // validation on 512 rows
    const int BT = 512;
    std::vector<float> logits = rand_bf16((size_t)BT * Vp, -4.0f, 4.0f, &rng);
    for (int i = 0; i < BT; i++)   // the padded columns hold garbage, they must not matter
        for (int c = V; c < Vp; c++) { logits[(size_t)i * Vp + c] = bf16_round(rng_range(&rng, -100.0f, 100.0f)); }
    std::vector<int> targets(BT);
    for (int i = 0; i < BT; i++) { targets[i] = (rng_u32(&rng) % 4 == 0) ? -1 : rng_int(&rng, 0, V); }
    targets[0] = 0; targets[1] = V - 1; targets[2] = -1;   // the edges

    std::vector<float> ref_loss(BT), ref_dlogits((size_t)BT * Vp, 0.0f);
    for (int i = 0; i < BT; i++) {
        if (targets[i] < 0) { ref_loss[i] = 0.0f; continue; }
        const float* x = &logits[(size_t)i * Vp];
        double m = -1e300, s = 0.0;
        for (int c = 0; c < V; c++) { m = fmax(m, (double)x[c]); }
        for (int c = 0; c < V; c++) { s += exp(x[c] - m); }
        ref_loss[i] = (float)(log(s) + m - x[targets[i]]);
        for (int c = 0; c < V; c++) { ref_dlogits[(size_t)i * Vp + c] = (float)(exp(x[c] - m) / s - (c == targets[i] ? 1.0 : 0.0)); }
    }

    const float rel_s = 6.0f * FP32_EPS * (V / 32 + 64);
    std::vector<float> tol_dlogits(ref_dlogits.size());
    for (size_t i = 0; i < tol_dlogits.size(); i++) {
        int row = (int)(i / Vp), c = (int)(i % Vp);
        float p = ref_dlogits[i] + (c == targets[row] ? 1.0f : 0.0f);
        tol_dlogits[i] = rel_s * p;
    }
    const float tol_loss = rel_s + 4e-6f;

    floatX* d_logits = dmalloc<floatX>((size_t)BT * Vp);
    float* d_losses = dmalloc<float>(BT);
    int* d_targets = to_device_int(targets);
    double* d_sum = dmalloc<double>(1);
    double* d_sum2 = dmalloc<double>(1);
    char name[128];
    printf("validation (BT=%d V=%d Vp=%d)\n", BT, V, Vp);
    for (int bs : block_sizes) {
        upload(d_logits, logits);
        cudaCheck(cudaMemset(d_losses, 0xff, BT * sizeof(float)));   // NaN: every loss must be written
        fused_classifier(d_logits, d_losses, d_targets, BT, V, Vp, 0, bs);
        snprintf(name, sizeof(name), "losses block %d", bs);  validate(name, d_losses, ref_loss, 0.0f, tol_loss);
        snprintf(name, sizeof(name), "dlogits block %d", bs); validate(name, d_logits, ref_dlogits, BF16_RTOL, 1e-6f, &tol_dlogits);
    }
    // sum_losses: against the double sum of the GPU's own losses, in both modes, and reproducible
    {
        std::vector<float> gl = download(d_losses, BT);
        double expect = 0.0;
        for (int i = 0; i < BT; i++) { expect += gl[i]; }
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
        // and the whole classifier twice
        floatX* d_logits2 = dmalloc<floatX>((size_t)BT * Vp);
        float* d_losses2 = dmalloc<float>(BT);
        upload(d_logits, logits);
        upload(d_logits2, logits);
        fused_classifier(d_logits, d_losses, d_targets, BT, V, Vp, 0);
        fused_classifier(d_logits2, d_losses2, d_targets, BT, V, Vp, 0);
        check_bitwise_equal("fused_classifier determinism dlogits", d_logits, d_logits2, (size_t)BT * Vp * sizeof(floatX));
        check_bitwise_equal("fused_classifier determinism losses", d_losses, d_losses2, BT * sizeof(float));
        cudaCheck(cudaFree(d_logits2)); cudaCheck(cudaFree(d_losses2));
    }
    cudaCheck(cudaFree(d_logits)); cudaCheck(cudaFree(d_losses)); cudaCheck(cudaFree(d_targets));

    // benchmark at B*T = 8192
    const int BTb = 8192;
    if (skip_benchmarks("classifier")) { return 0; }
    printf("benchmark (BT=%d; bytes: logits read twice, dlogits written)\n", BTb);
    floatX* d_lb = dmalloc<floatX>((size_t)BTb * Vp);
    float* d_lossb = dmalloc<float>(BTb);
    std::vector<int> tb(BTb);
    for (auto& t : tb) { t = rng_int(&rng, 0, V); }
    int* d_tb = to_device_int(tb);
    upload(d_lb, rand_bf16((size_t)BTb * Vp, -4.0f, 4.0f, &rng));
    const double bytes = 3.0 * BTb * (double)Vp * sizeof(floatX);
    for (int bs : block_sizes) {
        float ms = benchmark_ms(10, [&]() { fused_classifier(d_lb, d_lossb, d_tb, BTb, V, Vp, 0, bs); });
        print_benchmark("fused_classifier", bs, ms, bytes, 0);
    }
    float ms = benchmark_ms(20, [&]() { sum_losses(d_sum, d_lossb, BTb, 0, 0); });
    print_benchmark("sum_losses", 1024, ms, BTb * sizeof(float), 0);
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaFree(d_lb)); cudaCheck(cudaFree(d_lossb)); cudaCheck(cudaFree(d_tb)); cudaCheck(cudaFree(d_sum)); cudaCheck(cudaFree(d_sum2));
    printf("classifier: ALL OK\n");
    return 0;
}
