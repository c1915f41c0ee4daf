/* Cancellation from a second thread while an apply of a large layer runs: a feeder thread
 * streams a tar holding one 4 GiB file into a pipe, a canceller thread triggers the handle once
 * 64 MiB went through, and apply must return CANCELED long before the stream ends (had it not
 * been cancelled it would have read to the end and succeeded). The same for a compare of a tree
 * with a large file, cancelled while the layer is being written. */
#include "test_util.h"

#include <signal.h>

#define ENTRY_SIZE (4ull << 30)      /* the layer's one file: 4 GiB of zeros */
#define CANCEL_AFTER (64ull << 20)   /* trigger once this much went into the pipe */

struct feeder {
    int fd;
    atomic_uint_fast64_t fed;
    atomic_int stopped_early;
};

static void octal(char *field, size_t width, uint64_t value)
{
    /* width-1 octal digits and a NUL, as ustar wants */
    snprintf(field, width, "%0*llo", (int)width - 1, (unsigned long long)value);
}

/* A ustar header for a regular file `name` of `size` bytes. */
static void tar_header(unsigned char block[512], const char *name, uint64_t size)
{
    memset(block, 0, 512);
    char *h = (char *)block;
    snprintf(h, 100, "%s", name);
    octal(h + 100, 8, 0644);
    octal(h + 108, 8, 0);
    octal(h + 116, 8, 0);
    octal(h + 124, 12, size);
    octal(h + 136, 12, 1500000000);
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += block[i];
    snprintf(h + 148, 8, "%06o", sum);
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void *feed(void *arg)
{
    struct feeder *f = arg;
    unsigned char block[512];
    static unsigned char zeros[1 << 16];
    tar_header(block, "big.bin", ENTRY_SIZE);
    if (write_all(f->fd, block, sizeof block) != 0) {
        atomic_store(&f->stopped_early, 1);
        return NULL;
    }
    for (uint64_t left = ENTRY_SIZE; left > 0;) {
        size_t chunk = left < sizeof zeros ? (size_t)left : sizeof zeros;
        if (write_all(f->fd, zeros, chunk) != 0) { /* EPIPE: the reader is gone */
            atomic_store(&f->stopped_early, 1);
            return NULL;
        }
        left -= chunk;
        atomic_fetch_add(&f->fed, chunk);
    }
    memset(zeros, 0, 1024);
    if (write_all(f->fd, zeros, 1024) != 0) /* end-of-archive marker */
        atomic_store(&f->stopped_early, 1);
    return NULL;
}

struct canceller {
    layerdiff_cancel *cancel;
    atomic_uint_fast64_t *watched;
    uint64_t threshold;
    atomic_int call_returned; /* stop waiting if the call ended on its own */
    struct timespec triggered_at;
};

static void *cancel_when_reached(void *arg)
{
    struct canceller *c = arg;
    const struct timespec pause = {0, 1000 * 1000};
    while (atomic_load(c->watched) < c->threshold && !atomic_load(&c->call_returned))
        nanosleep(&pause, NULL);
    clock_gettime(CLOCK_MONOTONIC, &c->triggered_at);
    layerdiff_cancel_trigger(c->cancel);
    return NULL;
}

static double ms_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) * 1e3 + (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

static void cancel_apply(const char *dir)
{
    printf("cancel a running apply from another thread\n");
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0)
        DIE("pipe: %s", strerror(errno));
    struct feeder feeder = {.fd = pipe_fds[1]};
    layerdiff_cancel *cancel = layerdiff_cancel_new();
    struct canceller canceller = {.cancel = cancel, .watched = &feeder.fed,
                                  .threshold = CANCEL_AFTER};
    pthread_t feed_thread, cancel_thread;
    pthread_create(&feed_thread, NULL, feed, &feeder);
    pthread_create(&cancel_thread, NULL, cancel_when_reached, &canceller);

    layerdiff_apply_options options;
    memset(&options, 0, sizeof options);
    options.cancel = cancel;
    layerdiff_apply_result result;
    layerdiff_error *err = layerdiff_apply(dir, pipe_fds[0], &options, &result);
    atomic_store(&canceller.call_returned, 1);
    pthread_join(cancel_thread, NULL);
    printf("  apply returned %.1f ms after the trigger, %" PRIuFAST64 " MiB fed\n",
           ms_since(&canceller.triggered_at), atomic_load(&feeder.fed) >> 20);
    CHECK(fd_is_open(pipe_fds[0]), "apply closed the pipe");
    close(pipe_fds[0]); /* the feeder now gets EPIPE and stops */
    pthread_join(feed_thread, NULL);
    close(pipe_fds[1]);
    expect_error("apply cancelled mid-stream", err, LAYERDIFF_ERROR_CANCELED, 0, "cancel");
    CHECK(atomic_load(&feeder.stopped_early), "the whole 4 GiB stream was read: not cancelled");
    layerdiff_cancel_free(cancel);
}

struct drain {
    int fd;
    atomic_uint_fast64_t drained;
};

/* Read the layer out of the pipe until the write end closes, counting bytes. */
static void *drain(void *arg)
{
    struct drain *d = arg;
    static char buf[1 << 16];
    ssize_t n;
    while ((n = read(d->fd, buf, sizeof buf)) != 0) {
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0)
            atomic_fetch_add(&d->drained, (uint64_t)n);
    }
    return NULL;
}

static void cancel_compare(const char *dir)
{
    printf("cancel a running compare from another thread\n");
    char lower[4096], upper[4096], big[4096];
    path_join(lower, sizeof lower, dir, "lower");
    path_join(upper, sizeof upper, dir, "upper");
    path_join(big, sizeof big, upper, "big.bin");
    make_dir(dir, "lower", 0755);
    make_dir(dir, "upper", 0755);
    /* a sparse 4 GiB file: cheap on disk, long to tar */
    int fd = open(big, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)ENTRY_SIZE) != 0)
        DIE("create %s: %s", big, strerror(errno));
    close(fd);

    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0)
        DIE("pipe: %s", strerror(errno));
    struct drain drained = {.fd = pipe_fds[0]};
    layerdiff_cancel *cancel = layerdiff_cancel_new();
    struct canceller canceller = {.cancel = cancel, .watched = &drained.drained,
                                  .threshold = CANCEL_AFTER};
    pthread_t drain_thread, cancel_thread;
    pthread_create(&drain_thread, NULL, drain, &drained);
    pthread_create(&cancel_thread, NULL, cancel_when_reached, &canceller);
    layerdiff_compare_options options;
    memset(&options, 0, sizeof options);
    options.compression = LAYERDIFF_COMPRESSION_NONE;
    options.cancel = cancel;
    layerdiff_compare_result result;
    layerdiff_error *err = layerdiff_compare(lower, upper, pipe_fds[1], &options, &result);
    atomic_store(&canceller.call_returned, 1);
    pthread_join(cancel_thread, NULL);
    double ms = ms_since(&canceller.triggered_at);
    CHECK(fd_is_open(pipe_fds[1]), "compare closed the pipe");
    close(pipe_fds[1]); /* the drain sees EOF */
    pthread_join(drain_thread, NULL);
    close(pipe_fds[0]);
    uint64_t written = atomic_load(&drained.drained);
    printf("  compare returned %.1f ms after the trigger, %" PRIu64 " MiB written\n", ms,
           written >> 20);
    expect_error("compare cancelled mid-stream", err, LAYERDIFF_ERROR_CANCELED, 0, "cancel");
    CHECK(written < ENTRY_SIZE, "the whole file was written: not cancelled");
    layerdiff_cancel_free(cancel);
}

struct delayed_cancel {
    layerdiff_cancel *cancel;
    struct timespec triggered_at;
};

static void *cancel_after_200ms(void *arg)
{
    struct delayed_cancel *c = arg;
    const struct timespec pause = {0, 200 * 1000 * 1000};
    nanosleep(&pause, NULL);
    clock_gettime(CLOCK_MONOTONIC, &c->triggered_at);
    layerdiff_cancel_trigger(c->cancel);
    return NULL;
}

/* Issue 10 finding 6: a pipe whose writer stays open but silent must not delay a cancel. */
static void cancel_apply_stalled_input(const char *dir)
{
    printf("cancel an apply whose input pipe stalls\n");
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0)
        DIE("pipe: %s", strerror(errno));
    unsigned char block[512];
    tar_header(block, "stalled.bin", 1 << 20);
    if (write_all(pipe_fds[1], block, sizeof block) != 0) /* then nothing more */
        DIE("write: %s", strerror(errno));
    struct delayed_cancel c = {.cancel = layerdiff_cancel_new()};
    pthread_t cancel_thread;
    pthread_create(&cancel_thread, NULL, cancel_after_200ms, &c);
    layerdiff_apply_options options;
    memset(&options, 0, sizeof options);
    options.cancel = c.cancel;
    layerdiff_apply_result result;
    layerdiff_error *err = layerdiff_apply(dir, pipe_fds[0], &options, &result);
    pthread_join(cancel_thread, NULL);
    double ms = ms_since(&c.triggered_at);
    printf("  apply returned %.1f ms after the trigger\n", ms);
    expect_error("apply of a stalled pipe, cancelled", err, LAYERDIFF_ERROR_CANCELED, 0, "cancel");
    CHECK(ms < 2000, "apply took %.1f ms to return after the trigger", ms);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    layerdiff_cancel_free(c.cancel);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char dir[4096], root[4096];
    make_temp_dir(dir, sizeof dir, "cancel");
    path_join(root, sizeof root, dir, "root");
    make_dir(dir, "root", 0755);
    cancel_apply(root);
    cancel_apply_stalled_input(root);
    cancel_compare(dir);
    remove_tree(dir);
    return test_finish("test_cancel");
}
