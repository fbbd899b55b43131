// loader_rows.c: prints the rows llmc/dataloader.h yields, for dev/test/test_sft.py.
//
//   gcc -O2 -I. dev/test/loader_rows.c -o build/test/loader_rows
//   build/test/loader_rows PATTERN B T LAYOUT RANK WORLD STEPS [SHUFFLE_SEED]
//
// LAYOUT is 0 (packed) or 1 (padded, one example per row); with SHUFFLE_SEED the rows of each epoch come
// in the order dataloader_shuffle draws from that seed (the trainer's -shuffle 1 -seed S). The output is text:
//   rows <total_rows> truncated <rows_truncated>
// then, for each of STEPS micro-steps and each of this rank's B rows, one line
//   <step> <b> | <T inputs> | <T targets>
// with -1 for a masked target. Errors from dataloader_open are printed as "error: ..." with exit 1.
#include "llmc/dataloader.h"

int main(int argc, char** argv) {
    if (argc != 8 && argc != 9) {
        fprintf(stderr, "usage: %s PATTERN B T LAYOUT RANK WORLD STEPS [SHUFFLE_SEED]\n", argv[0]);
        return 1;
    }
    const char* pattern = argv[1];
    int B = atoi(argv[2]), T = atoi(argv[3]), padded = atoi(argv[4]);
    int rank = atoi(argv[5]), world = atoi(argv[6]), steps = atoi(argv[7]);
    if (B < 1 || T < 1 || (padded != 0 && padded != 1) || world < 1 || rank < 0 || rank >= world || steps < 0) {
        fprintf(stderr, "error: bad arguments\n");
        return 1;
    }
    DataLoader dl;
    char err[1400];
    if (dataloader_open(&dl, pattern, B, T, rank, world, padded, GPT2_VOCAB_SIZE, err, sizeof(err)) != 0) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    if (argc == 9) dataloader_shuffle(&dl, atoi(argv[8]));
    printf("rows %zu truncated %zu\n", dl.total_rows, dl.rows_truncated);
    for (int m = 0; m < steps; m++) {
        dataloader_next_batch(&dl);
        for (int b = 0; b < B; b++) {
            const int* x = dl.inputs + (size_t)b * T;
            const int* y = dl.targets + (size_t)b * T;
            printf("%d %d |", m, b);
            for (int t = 0; t < T; t++) printf(" %d", x[t]);
            printf(" |");
            for (int t = 0; t < T; t++) printf(" %d", y[t]);
            printf("\n");
        }
    }
    dataloader_free(&dl);
    return 0;
}
