/* 16 threads diffing and applying at once, each its own trees (different content per thread),
 * compressions mixed, one cancel handle and one progress context shared by all: every result
 * must be correct (applied tree equals upper, digests consistent, diffs deterministic). */
#include "test_util.h"

#define THREADS 16

struct shared_progress {
    atomic_uint_fast64_t calls;
};

static void count_call(void *ctx, uint64_t bytes)
{
    struct shared_progress *p = ctx;
    (void)bytes;
    atomic_fetch_add(&p->calls, 1);
}

struct job {
    int index;
    const char *dir;
    const layerdiff_cancel *cancel; /* never triggered: shared read-only use */
    struct shared_progress *progress;
    pthread_barrier_t *start;
};

static uint32_t compression_of(int index)
{
    static const uint32_t kinds[] = {LAYERDIFF_COMPRESSION_GZIP, LAYERDIFF_COMPRESSION_NONE,
                                     LAYERDIFF_COMPRESSION_ZSTD};
    return kinds[index % 3];
}

static void *run_job(void *arg)
{
    struct job *job = arg;
    char lower[4096], upper[4096], root[4096], layer[4096], again[4096], name[64];
    snprintf(name, sizeof name, "lower%d", job->index);
    path_join(lower, sizeof lower, job->dir, name);
    snprintf(name, sizeof name, "upper%d", job->index);
    path_join(upper, sizeof upper, job->dir, name);
    snprintf(name, sizeof name, "root%d", job->index);
    path_join(root, sizeof root, job->dir, name);
    snprintf(name, sizeof name, "layer%d", job->index);
    path_join(layer, sizeof layer, job->dir, name);
    snprintf(name, sizeof name, "again%d", job->index);
    path_join(again, sizeof again, job->dir, name);
    unsigned seed = 100u + (unsigned)job->index;
    if (mkdir(lower, 0755) != 0 || mkdir(upper, 0755) != 0 || mkdir(root, 0755) != 0)
        DIE("mkdir: %s", strerror(errno));
    build_lower(lower, seed);
    build_upper(upper, seed);
    build_lower(root, seed);

    pthread_barrier_wait(job->start); /* all threads call into layerdiff together */

    layerdiff_compare_options options;
    memset(&options, 0, sizeof options);
    options.compression = compression_of(job->index);
    options.cancel = job->cancel;
    options.progress = count_call;
    options.progress_ctx = job->progress;
    layerdiff_compare_result diff, diff_again;
    int out_fd = open(layer, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int again_fd = open(again, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int ok = expect_ok("compare", layerdiff_compare(lower, upper, out_fd, &options, &diff)) &&
             expect_ok("compare again",
                       layerdiff_compare(lower, upper, again_fd, &options, &diff_again));
    close(out_fd);
    close(again_fd);
    if (!ok)
        return NULL;
    CHECK(strcmp(diff.diff_id, diff_again.diff_id) == 0, "thread %d: diffID not deterministic",
          job->index);
    CHECK(file_size(layer) == diff.size, "thread %d: %" PRIu64 " bytes written, result says %" PRIu64,
          job->index, file_size(layer), diff.size);

    layerdiff_apply_options apply_options;
    memset(&apply_options, 0, sizeof apply_options);
    apply_options.cancel = job->cancel;
    apply_options.progress = count_call;
    apply_options.progress_ctx = job->progress;
    layerdiff_apply_result applied;
    int in_fd = open(layer, O_RDONLY | O_CLOEXEC);
    ok = expect_ok("apply", layerdiff_apply(root, in_fd, &apply_options, &applied));
    close(in_fd);
    if (!ok)
        return NULL;
    CHECK(strcmp(applied.digest, diff.diff_id) == 0 && applied.size == diff.uncompressed_size,
          "thread %d: apply says %s/%" PRIu64 ", compare said %s/%" PRIu64, job->index,
          applied.digest, applied.size, diff.diff_id, diff.uncompressed_size);
    int differences = tree_diff(upper, root, 1);
    CHECK(differences == 0, "thread %d: applied tree differs in %d place(s)", job->index,
          differences);
    CHECK(same_inode(root, "c/new.bin", "c/new-link"), "thread %d: hardlink lost", job->index);
    return NULL;
}

int main(void)
{
    char dir[4096];
    make_temp_dir(dir, sizeof dir, "threads");
    layerdiff_cancel *cancel = layerdiff_cancel_new();
    struct shared_progress progress = {0};
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    pthread_t threads[THREADS];
    struct job jobs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (struct job){i, dir, cancel, &progress, &start};
        if (pthread_create(&threads[i], NULL, run_job, &jobs[i]) != 0)
            DIE("pthread_create failed");
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);
    printf("%d threads done, %" PRIuFAST64 " progress calls in all\n", THREADS,
           atomic_load(&progress.calls));
    CHECK(atomic_load(&progress.calls) >= 2 * THREADS, "progress calls missing");
    layerdiff_cancel_free(cancel);
    remove_tree(dir);
    return test_finish("test_threads");
}
