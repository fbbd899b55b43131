// format.h: every file-format constant, named once (doc/formats.md describes the layouts;
// dev/data/formats.py names the same numbers for the Python side).
#ifndef LLMC_FORMAT_H
#define LLMC_FORMAT_H

#define HEADER_INTS 256            // every file starts with 256 int32

#define MODEL_MAGIC 20240326       // llm.c's model checkpoint
#define MODEL_VERSION_FP32 3
#define MODEL_VERSION_BF16 5

#define DATA_MAGIC 20240520        // llm.c's token shard
#define DATA_VERSION_TOKENS 1      // uint16 tokens
#define DATA_VERSION_MASKED 2      // uint16 tokens, then uint8 loss mask (this project)

#define TOKENIZER_MAGIC 20240328   // llm.c's tokenizer file
#define TOKENIZER_VERSION 2

#define DEBUG_STATE_MAGIC 20240327 // train_gpt2.py's debug state
#define DEBUG_STATE_VERSION 3      // this project's: masked window and trajectory

#define EVAL_MAGIC 20240522        // llm.c's multiple-choice eval file (HellaSwag)
#define EVAL_VERSION 1
#define EVAL_EXAMPLE_START 65535   // uint16 delimiter opening each example
#define EVAL_MAX_ENDINGS 16        // endings per example this reader accepts (HellaSwag has 4)

#define TRAIN_STATE_MAGIC 20241101 // this project's per-rank resume state
#define TRAIN_STATE_VERSION 2      // 2: adds the step check, the run identity and checksums

// A checkpoint this project writes stamps its run into model header slots llm.c never reads
// (it reads slots 0..7): whether the stamp is there, the step, the run identity and a checksum
// of the parameter bytes (64-bit values as two int32, low half first).
#define MODEL_SLOT_STAMP 16
#define MODEL_STAMP_MAGIC 20261130
#define MODEL_SLOT_STEP 17
#define MODEL_SLOT_RUN_ID 18       // and 19
#define MODEL_SLOT_CHECKSUM 20     // and 21

#define GPT2_EOT 50256             // <|endoftext|>: opens every document and example
#define GPT2_VOCAB_SIZE 50257
#define VOCAB_PAD_MULTIPLE 128     // padded_vocab_size = vocab_size rounded up to this

#endif // LLMC_FORMAT_H
