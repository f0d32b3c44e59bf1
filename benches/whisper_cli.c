/*
 * Minimal whisper.cpp benchmark: the baseline for voxloop's ASR timings.
 *
 * Built against the whisper.cpp sources vendored by whisper-rs-sys, so both
 * sides run the same library code (see scripts/bench-whisper-cli.sh).
 *
 * usage: whisper_cli MODEL WAV [audio_ctx] [threads] [flash_attn]
 *   WAV        16 kHz mono 16-bit PCM
 *   audio_ctx  encoder frames, 0 = the full 30 s window (default 0)
 *   threads    default 2 (voxloop's asr_threads default)
 *   flash_attn 0 or 1, default 0 (whisper-rs's default; whisper.cpp's own is 1)
 *
 * Decoding settings mirror voxloop's (src/pipeline/asr.rs). The model is
 * loaded once; one warm-up run, then RUNS timed runs. Prints the text and
 * "ms=<median>".
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "whisper.h"

#define RUNS 3

static void quiet_log(enum ggml_log_level level, const char *text, void *user) {
    (void)level;
    (void)text;
    (void)user;
}

static uint32_t le32(const unsigned char *p) {
    return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* Reads a 16 kHz mono 16-bit PCM WAV into floats in [-1, 1). Returns NULL on error. */
static float *read_wav(const char *path, int *n_samples) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    unsigned char hdr[12], ch[8], fmt[16];
    float *pcm = NULL;
    int have_fmt = 0;
    if (fread(hdr, 1, 12, f) != 12 || memcmp(hdr, "RIFF", 4) || memcmp(hdr + 8, "WAVE", 4)) {
        fprintf(stderr, "%s: not a RIFF/WAVE file\n", path);
        goto done;
    }
    while (fread(ch, 1, 8, f) == 8) {
        uint32_t size = le32(ch + 4);
        if (!memcmp(ch, "fmt ", 4) && size >= 16) {
            if (fread(fmt, 1, 16, f) != 16 || fseek(f, (long)(size - 16 + (size & 1)), SEEK_CUR))
                break;
            if (le16(fmt) != 1 || le16(fmt + 2) != 1 || le32(fmt + 4) != WHISPER_SAMPLE_RATE ||
                le16(fmt + 14) != 16) {
                fprintf(stderr, "%s: need 16 kHz mono 16-bit PCM\n", path);
                goto done;
            }
            have_fmt = 1;
        } else if (!memcmp(ch, "data", 4) && have_fmt) {
            int n = (int)(size / 2);
            int16_t *raw = malloc((size_t)n * sizeof *raw);
            pcm = malloc((size_t)n * sizeof *pcm);
            if (!raw || !pcm || fread(raw, 2, (size_t)n, f) != (size_t)n) {
                fprintf(stderr, "%s: short data chunk\n", path);
                free(raw);
                free(pcm);
                pcm = NULL;
                goto done;
            }
            for (int i = 0; i < n; i++)
                pcm[i] = raw[i] / 32768.0f; /* assumes a little-endian host, like ggml */
            free(raw);
            *n_samples = n;
            goto done;
        } else if (fseek(f, (long)(size + (size & 1)), SEEK_CUR)) {
            break;
        }
    }
    fprintf(stderr, "%s: no fmt/data chunk\n", path);
done:
    fclose(f);
    return pcm;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 6) {
        fprintf(stderr, "usage: %s MODEL WAV [audio_ctx] [threads] [flash_attn]\n", argv[0]);
        return 2;
    }
    int audio_ctx = argc > 3 ? atoi(argv[3]) : 0;
    int threads = argc > 4 ? atoi(argv[4]) : 2;
    int flash_attn = argc > 5 ? atoi(argv[5]) : 0;

    whisper_log_set(quiet_log, NULL);

    int n = 0;
    float *pcm = read_wav(argv[2], &n);
    if (!pcm)
        return 1;

    struct whisper_context_params cparams = whisper_context_default_params();
    cparams.use_gpu = false;
    cparams.flash_attn = flash_attn != 0;
    struct whisper_context *ctx = whisper_init_from_file_with_params(argv[1], cparams);
    if (!ctx) {
        fprintf(stderr, "%s: cannot load model\n", argv[1]);
        return 1;
    }

    struct whisper_full_params p = whisper_full_default_params(WHISPER_SAMPLING_GREEDY);
    p.greedy.best_of = 1;
    p.language = "en";
    p.n_threads = threads;
    p.translate = false;
    p.no_context = true;
    p.no_timestamps = true;
    p.single_segment = true;
    p.print_special = false;
    p.print_progress = false;
    p.print_realtime = false;
    p.print_timestamps = false;
    p.suppress_blank = true;
    p.suppress_nst = true;
    p.temperature = 0.0f;
    p.temperature_inc = 0.0f;
    p.audio_ctx = audio_ctx;

    double ms[RUNS];
    for (int r = -1; r < RUNS; r++) { /* r = -1 is the warm-up */
        double t0 = now_ms();
        if (whisper_full(ctx, p, pcm, n) != 0) {
            fprintf(stderr, "whisper_full failed\n");
            return 1;
        }
        if (r >= 0)
            ms[r] = now_ms() - t0;
    }

    for (int i = 0; i < whisper_full_n_segments(ctx); i++)
        fputs(whisper_full_get_segment_text(ctx, i), stdout);
    qsort(ms, RUNS, sizeof ms[0], cmp_double);
    printf("\nms=%.0f\n", ms[RUNS / 2]);

    whisper_free(ctx);
    free(pcm);
    return 0;
}
