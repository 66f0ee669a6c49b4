/* Replays fuzzer inputs through fuzz_api.c without libFuzzer (any C compiler):
 *
 *   fuzz_replay FILE_OR_DIR...
 *
 * Every regular file named (directories: every regular file in them, in name order) is
 * read and passed to LLVMFuzzerTestOneInput once. A contract violation aborts, as it
 * does under libFuzzer. Registered with CTest as fuzz.replay over c_tests/fuzz/corpus,
 * so that the committed corpus runs in every build (and under ASan in build-asan). */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return 1;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    if (buf == NULL) {
        fclose(f);
        return 1;
    }
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return 1;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    fprintf(stderr, "fuzz_replay: %s (%zu bytes)\n", path, n);
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
    int files = 0, errors = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE_OR_DIR...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            errors++;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            errors += run_file(argv[i]);
            files++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (d == NULL) {
            perror(argv[i]);
            errors++;
            continue;
        }
        char **names = NULL;
        size_t nnames = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            size_t len = strlen(argv[i]) + strlen(e->d_name) + 2;
            char *path = malloc(len);
            char **nn = realloc(names, (nnames + 1) * sizeof *names);
            if (path == NULL || nn == NULL) {
                free(path);
                free(nn == NULL ? names : nn);
                closedir(d);
                return 1;
            }
            names = nn;
            snprintf(path, len, "%s/%s", argv[i], e->d_name);
            struct stat fst;
            if (stat(path, &fst) == 0 && S_ISREG(fst.st_mode)) {
                names[nnames++] = path;
            } else {
                free(path);
            }
        }
        closedir(d);
        if (nnames > 0) qsort(names, nnames, sizeof *names, by_name);
        for (size_t k = 0; k < nnames; k++) {
            errors += run_file(names[k]);
            files++;
            free(names[k]);
        }
        free(names);
    }
    printf("fuzz_replay: %d inputs replayed, %d unreadable\n", files, errors);
    if (files == 0) {
        fprintf(stderr, "fuzz_replay: no input found\n");
        return 1;
    }
    return errors == 0 ? 0 : 1;
}
