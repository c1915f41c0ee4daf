/* Every error path of the C ABI: NULL and bad arguments, bad file descriptors, missing paths,
 * corrupt layers, unsupported options, cancellation before the start; and that a failed call
 * leaves its out-parameter untouched and the caller's descriptor open. */
#include "test_util.h"

#include <signal.h>

#ifndef EXPECTED_VERSION
#error "build with -DEXPECTED_VERSION=\"x.y.z\" (the installed pkg-config version)"
#endif

static unsigned char pattern[sizeof(layerdiff_compare_result)];

/* Poison an out-parameter so that any write to it is visible. */
static void poison(void *out, size_t size)
{
    memset(out, 0xA5, size);
}

static int untouched(const void *out, size_t size)
{
    memset(pattern, 0xA5, sizeof pattern);
    return memcmp(out, pattern, size) == 0;
}

static layerdiff_error *compare_with(const char *lower, const char *upper, int fd,
                                     const layerdiff_compare_options *options, const char *what)
{
    layerdiff_compare_result result;
    poison(&result, sizeof result);
    layerdiff_error *err = layerdiff_compare(lower, upper, fd, options, &result);
    if (err != NULL)
        CHECK(untouched(&result, sizeof result), "%s: result written on failure", what);
    return err;
}

static layerdiff_error *apply_with(const char *root, int fd,
                                   const layerdiff_apply_options *options, const char *what)
{
    layerdiff_apply_result result;
    poison(&result, sizeof result);
    layerdiff_error *err = layerdiff_apply(root, fd, options, &result);
    if (err != NULL)
        CHECK(untouched(&result, sizeof result), "%s: result written on failure", what);
    return err;
}

static void test_accessors(void)
{
    printf("accessors and version\n");
    CHECK(layerdiff_error_kind(NULL) == 0, "kind(NULL)");
    CHECK(layerdiff_error_errno(NULL) == 0, "errno(NULL)");
    CHECK(layerdiff_error_message(NULL) != NULL && layerdiff_error_message(NULL)[0] == '\0',
          "message(NULL) is not \"\"");
    layerdiff_error_free(NULL);
    layerdiff_cancel_free(NULL);
    layerdiff_cancel_trigger(NULL);
    const char *version = layerdiff_version();
    CHECK(version != NULL && strcmp(version, EXPECTED_VERSION) == 0, "version %s, want %s",
          version ? version : "(null)", EXPECTED_VERSION);
    CHECK(version == layerdiff_version(), "version is not a static string");
}

static void test_compare_arguments(const char *dir, int out_fd)
{
    printf("compare: bad arguments\n");
    layerdiff_compare_result result;
    layerdiff_compare_options options;
    memset(&options, 0, sizeof options);

    expect_error("compare upper=NULL", compare_with(dir, NULL, out_fd, NULL, "upper=NULL"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, "upper");
    /* A NULL or empty lower is no lower (containerd's WriteDiff("", upper)), not an error. */
    expect_error("compare upper=\"\"", compare_with(dir, "", out_fd, NULL, "upper=\"\""),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, "upper");
    expect_error("compare out=NULL", layerdiff_compare(dir, dir, out_fd, NULL, NULL),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, "out");
    (void)result;

    expect_error("compare out_fd=-1", compare_with(dir, dir, -1, NULL, "fd -1"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, EBADF, "out_fd");
    int closed = dup(out_fd);
    close(closed);
    expect_error("compare out_fd=closed", compare_with(dir, dir, closed, NULL, "closed fd"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, EBADF, "out_fd");
    int read_only = open("/dev/null", O_RDONLY | O_CLOEXEC);
    expect_error("compare out_fd=read-only", compare_with(dir, dir, read_only, NULL, "rdonly"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, EBADF, "not open for writing");
    CHECK(fd_is_open(read_only), "compare closed the caller's read-only fd");
    close(read_only);

    options.compression = 99;
    expect_error("compare compression=99", compare_with(dir, dir, out_fd, &options, "comp 99"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, "99");
    options.compression = LAYERDIFF_COMPRESSION_GZIP;
    options.level = 42;
    expect_error("compare gzip level=42", compare_with(dir, dir, out_fd, &options, "gzip 42"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, "42");
    options.level = -1;
    expect_error("compare gzip level=-1", compare_with(dir, dir, out_fd, &options, "gzip -1"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, "-1");
    options.compression = LAYERDIFF_COMPRESSION_ZSTD;
    options.level = 99;
    expect_error("compare zstd level=99", compare_with(dir, dir, out_fd, &options, "zstd 99"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, "99");
    options.compression = LAYERDIFF_COMPRESSION_NONE;
    options.level = 5;
    expect_error("compare none level=5", compare_with(dir, dir, out_fd, &options, "none 5"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, "5");
    CHECK(fd_is_open(out_fd), "compare closed the caller's fd");
    CHECK(lseek(out_fd, 0, SEEK_END) == 0, "a call rejected up front wrote to out_fd");
}

static void test_apply_arguments(const char *root, int in_fd)
{
    printf("apply: bad arguments\n");
    layerdiff_apply_options options;
    memset(&options, 0, sizeof options);

    expect_error("apply root=NULL", apply_with(NULL, in_fd, NULL, "root=NULL"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, "root");
    expect_error("apply root=\"\"", apply_with("", in_fd, NULL, "root=\"\""),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, "root");
    expect_error("apply out=NULL", layerdiff_apply(root, in_fd, NULL, NULL),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, "out");
    expect_error("apply in_fd=-1", apply_with(root, -1, NULL, "fd -1"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, EBADF, "in_fd");
    int closed = dup(in_fd);
    close(closed);
    expect_error("apply in_fd=closed", apply_with(root, closed, NULL, "closed fd"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, EBADF, "in_fd");
    int write_only = open("/dev/null", O_WRONLY | O_CLOEXEC);
    expect_error("apply in_fd=write-only", apply_with(root, write_only, NULL, "wronly"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, EBADF, "not open for reading");
    CHECK(fd_is_open(write_only), "apply closed the caller's write-only fd");
    close(write_only);

    options.whiteouts = 7;
    expect_error("apply whiteouts=7", apply_with(root, in_fd, &options, "whiteouts 7"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, "7");
    options.whiteouts = LAYERDIFF_WHITEOUTS_OVERLAY;
    options.parents = NULL;
    options.parents_len = 2;
    expect_error("apply parents=NULL,len=2", apply_with(root, in_fd, &options, "parents NULL"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, "parents");
    const char *parents[] = {root, NULL};
    options.parents = parents;
    expect_error("apply parents[1]=NULL", apply_with(root, in_fd, &options, "parents[1]"),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, "parents[1]");
    CHECK(fd_is_open(in_fd), "apply closed the caller's fd");
}

static void test_missing_paths(const char *dir, int out_fd, int in_fd)
{
    printf("missing paths\n");
    char missing[4096];
    path_join(missing, sizeof missing, dir, "does-not-exist");
    expect_error("compare lower missing", compare_with(missing, dir, out_fd, NULL, "lower"),
                 LAYERDIFF_ERROR_NOT_FOUND, ENOENT, "does-not-exist");
    expect_error("compare upper missing", compare_with(dir, missing, out_fd, NULL, "upper"),
                 LAYERDIFF_ERROR_NOT_FOUND, ENOENT, "does-not-exist");
    expect_error("apply root missing", apply_with(missing, in_fd, NULL, "root"),
                 LAYERDIFF_ERROR_NOT_FOUND, ENOENT, "does-not-exist");
}

static void test_corrupt_layers(const char *dir)
{
    printf("corrupt layers\n");
    char root[4096];
    path_join(root, sizeof root, dir, "corrupt-root");
    make_dir(dir, "corrupt-root", 0755);

    /* A tar header whose checksum is wrong. */
    unsigned char header[1024];
    memset(header, 0, sizeof header);
    memset(header, 'x', 512);
    int fd = file_fd(dir, "bad-header.tar", header, sizeof header, O_RDONLY);
    expect_error("apply bad tar header", apply_with(root, fd, NULL, "bad header"),
                 LAYERDIFF_ERROR_INVALID_ARCHIVE, -1, NULL);
    close(fd);

    /* A gzip member cut in the middle (a real layer made by tar+gzip). */
    char command[16384];
    char source[4096], layer[4096];
    path_join(source, sizeof source, dir, "corrupt-source");
    path_join(layer, sizeof layer, dir, "whole.tar.gz");
    make_dir(dir, "corrupt-source", 0755);
    build_lower(source, 7);
    snprintf(command, sizeof command, "tar -C '%s' -czf '%s' .", source, layer);
    if (system(command) != 0)
        DIE("%s failed", command);
    unsigned char *whole = NULL;
    size_t whole_len = 0;
    if (read_whole(layer, &whole, &whole_len) != 0 || whole_len < 64)
        DIE("read %s", layer);
    fd = file_fd(dir, "truncated.tar.gz", whole, whole_len / 2, O_RDONLY);
    expect_error("apply truncated gzip", apply_with(root, fd, NULL, "truncated gzip"),
                 LAYERDIFF_ERROR_INVALID_ARCHIVE, -1, NULL);
    close(fd);

    /* gzip magic followed by garbage. */
    memset(header, 0x5a, sizeof header);
    header[0] = 0x1f;
    header[1] = 0x8b;
    header[2] = 0x08;
    fd = file_fd(dir, "garbage.gz", header, sizeof header, O_RDONLY);
    expect_error("apply gzip garbage", apply_with(root, fd, NULL, "gzip garbage"),
                 LAYERDIFF_ERROR_INVALID_ARCHIVE, -1, NULL);
    close(fd);

    /* zstd magic followed by garbage. */
    header[0] = 0x28;
    header[1] = 0xb5;
    header[2] = 0x2f;
    header[3] = 0xfd;
    fd = file_fd(dir, "garbage.zst", header, sizeof header, O_RDONLY);
    expect_error("apply zstd garbage", apply_with(root, fd, NULL, "zstd garbage"),
                 LAYERDIFF_ERROR_INVALID_ARCHIVE, -1, NULL);
    close(fd);
    free(whole);
}

static void test_canceled_before_start(const char *dir, int out_fd)
{
    printf("cancelled before the call\n");
    layerdiff_cancel *cancel = layerdiff_cancel_new();
    CHECK(cancel != NULL, "cancel_new returned NULL");
    layerdiff_cancel_trigger(cancel);
    layerdiff_cancel_trigger(cancel); /* idempotent */

    char lower[4096], upper[4096], root[4096];
    make_tree_pair(dir, "cancel-", 3, lower, upper);
    path_join(root, sizeof root, dir, "cancel-root");
    make_dir(dir, "cancel-root", 0755);

    layerdiff_compare_options compare_options;
    memset(&compare_options, 0, sizeof compare_options);
    compare_options.cancel = cancel;
    expect_error("compare pre-cancelled",
                 compare_with(lower, upper, out_fd, &compare_options, "pre-cancelled"),
                 LAYERDIFF_ERROR_CANCELED, 0, "cancel");

    /* A valid layer, so only the cancellation can make apply fail. */
    char layer[4096], command[16384];
    path_join(layer, sizeof layer, dir, "cancel.tar");
    snprintf(command, sizeof command, "tar -C '%s' -cf '%s' .", upper, layer);
    if (system(command) != 0)
        DIE("%s failed", command);
    int in_fd = open(layer, O_RDONLY | O_CLOEXEC);
    layerdiff_apply_options apply_options;
    memset(&apply_options, 0, sizeof apply_options);
    apply_options.cancel = cancel;
    expect_error("apply pre-cancelled", apply_with(root, in_fd, &apply_options, "pre-cancelled"),
                 LAYERDIFF_ERROR_CANCELED, 0, "cancel");
    close(in_fd);
    layerdiff_cancel_free(cancel);
}

/* The output failing mid-layer: the errno reaches the caller. */
static void test_output_failures(const char *dir)
{
    printf("output failures\n");
    char lower[4096], upper[4096];
    make_tree_pair(dir, "out-", 5, lower, upper);
    layerdiff_compare_options options;
    memset(&options, 0, sizeof options);
    options.compression = LAYERDIFF_COMPRESSION_NONE;

    int full = open("/dev/full", O_WRONLY | O_CLOEXEC);
    if (full < 0)
        DIE("open /dev/full: %s", strerror(errno));
    expect_error("compare to /dev/full", compare_with(lower, upper, full, &options, "full"),
                 LAYERDIFF_ERROR_IO, ENOSPC, "No space left");
    close(full);

    /* SIGPIPE is ignored in main, as a C program writing to pipes must. */
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0)
        DIE("pipe: %s", strerror(errno));
    close(pipe_fds[0]);
    expect_error("compare to a pipe without reader",
                 compare_with(lower, upper, pipe_fds[1], &options, "epipe"), LAYERDIFF_ERROR_IO,
                 EPIPE, "Broken pipe");
    CHECK(fd_is_open(pipe_fds[1]), "compare closed the pipe");
    close(pipe_fds[1]);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char dir[4096];
    make_temp_dir(dir, sizeof dir, "errors");
    int out_fd = file_fd(dir, "out.layer", "", 0, O_RDWR);
    int in_fd = file_fd(dir, "in.layer", "", 0, O_RDONLY);

    test_accessors();
    test_compare_arguments(dir, out_fd);
    test_apply_arguments(dir, in_fd);
    test_missing_paths(dir, out_fd, in_fd);
    test_corrupt_layers(dir);
    test_canceled_before_start(dir, out_fd);
    test_output_failures(dir);

    CHECK(fd_is_open(out_fd) && fd_is_open(in_fd), "a call closed the caller's fd");
    close(out_fd);
    close(in_fd);
    remove_tree(dir);
    return test_finish("test_errors");
}
