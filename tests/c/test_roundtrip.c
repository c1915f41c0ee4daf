/* diff + apply round trip through the C ABI, for every compression: the descriptors agree with
 * sha256sum/gzip/zstd run on the written bytes, applying the layer onto a copy of the lower tree
 * gives the upper tree, progress is reported with non-decreasing counts, the borrowed fds stay
 * open and their offsets advance, and SOURCE_DATE_EPOCH clamps mtimes. */
#include "test_util.h"

struct progress_log {
    atomic_uint_fast64_t calls;
    atomic_uint_fast64_t last;
    atomic_int went_backwards;
};

static void record_progress(void *ctx, uint64_t bytes)
{
    struct progress_log *log = ctx;
    uint64_t previous = atomic_exchange(&log->last, bytes);
    if (bytes < previous)
        atomic_store(&log->went_backwards, 1);
    atomic_fetch_add(&log->calls, 1);
}

struct variant {
    const char *name;
    int use_null_options;
    uint32_t compression;
    int32_t level;
    const char *media_type;
    const char *decompress; /* shell command turning the layer on stdin into the tar */
};

static const struct variant variants[] = {
    {"default (NULL options)", 1, 0, 0, "application/vnd.oci.image.layer.v1.tar+gzip", "gzip -dc"},
    {"gzip level 1", 0, LAYERDIFF_COMPRESSION_GZIP, 1, "application/vnd.oci.image.layer.v1.tar+gzip", "gzip -dc"},
    {"gzip level 9", 0, LAYERDIFF_COMPRESSION_GZIP, 9, "application/vnd.oci.image.layer.v1.tar+gzip", "gzip -dc"},
    {"none", 0, LAYERDIFF_COMPRESSION_NONE, 0, "application/vnd.oci.image.layer.v1.tar", "cat"},
    {"zstd default", 0, LAYERDIFF_COMPRESSION_ZSTD, 0, "application/vnd.oci.image.layer.v1.tar+zstd", "zstd -dc"},
    {"zstd level 19", 0, LAYERDIFF_COMPRESSION_ZSTD, 19, "application/vnd.oci.image.layer.v1.tar+zstd", "zstd -dc"},
};

static const char prefix[] = "bytes the caller wrote before the layer";

static void round_trip(const char *dir, const struct variant *v, int index)
{
    printf("round trip: %s\n", v->name);
    char lower[4096], upper[4096], root[4096], layer[4096], name[64];
    snprintf(name, sizeof name, "lower%d", index);
    path_join(lower, sizeof lower, dir, name);
    make_dir(dir, name, 0755);
    snprintf(name, sizeof name, "upper%d", index);
    path_join(upper, sizeof upper, dir, name);
    make_dir(dir, name, 0755);
    snprintf(name, sizeof name, "root%d", index);
    path_join(root, sizeof root, dir, name);
    make_dir(dir, name, 0755);
    snprintf(name, sizeof name, "layer%d", index);
    path_join(layer, sizeof layer, dir, name);
    build_lower(lower, (unsigned)index);
    build_upper(upper, (unsigned)index);
    build_lower(root, (unsigned)index);

    /* The layer goes after bytes already in the file: writing starts at the fd's offset. */
    int out_fd = open(layer, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out_fd < 0 || write(out_fd, prefix, sizeof prefix - 1) != (ssize_t)(sizeof prefix - 1))
        DIE("prepare %s: %s", layer, strerror(errno));

    struct progress_log compare_log = {0};
    layerdiff_compare_options options;
    memset(&options, 0, sizeof options);
    options.compression = v->compression;
    options.level = v->level;
    options.progress = record_progress;
    options.progress_ctx = &compare_log;
    layerdiff_compare_result diff;
    memset(&diff, 0, sizeof diff);
    int ok = expect_ok("compare", layerdiff_compare(lower, upper, out_fd,
                                                    v->use_null_options ? NULL : &options, &diff));
    CHECK(fd_is_open(out_fd), "compare closed out_fd");
    off_t end = lseek(out_fd, 0, SEEK_CUR);
    close(out_fd);
    if (!ok)
        return;

    printf("  %s %s size %" PRIu64 " diffID %s uncompressed %" PRIu64 "\n", diff.media_type,
           diff.digest, diff.size, diff.diff_id, diff.uncompressed_size);
    CHECK(strcmp(diff.media_type, v->media_type) == 0, "media type %s, want %s",
          diff.media_type, v->media_type);
    CHECK(end == (off_t)(sizeof prefix - 1 + diff.size), "fd offset %lld after compare, want %zu",
          (long long)end, sizeof prefix - 1 + (size_t)diff.size);
    CHECK(file_size(layer) == sizeof prefix - 1 + diff.size, "file holds %" PRIu64 " bytes",
          file_size(layer));

    /* Check the descriptors with standard tools, independently of layerdiff. */
    char command[16384], digest[72];
    uint64_t size = 0;
    snprintf(command, sizeof command, "tail -c +%zu '%s'", sizeof prefix, layer);
    CHECK(shell_digest(command, digest, &size) == 0 && strcmp(digest, diff.digest) == 0 &&
              size == diff.size,
          "digest %s, sha256sum says %s (%" PRIu64 " bytes)", diff.digest, digest, size);
    snprintf(command, sizeof command, "tail -c +%zu '%s' | %s", sizeof prefix, layer,
             v->decompress);
    CHECK(shell_digest(command, digest, &size) == 0 && strcmp(digest, diff.diff_id) == 0 &&
              size == diff.uncompressed_size,
          "diffID %s (%" PRIu64 " bytes), %s | sha256sum says %s (%" PRIu64 " bytes)",
          diff.diff_id, diff.uncompressed_size, v->decompress, digest, size);
    CHECK(diff.uncompressed_size % 512 == 0 && diff.uncompressed_size >= 1024,
          "uncompressed size %" PRIu64 " is not a tar's", diff.uncompressed_size);
    if (!v->use_null_options) {
        uint64_t calls = atomic_load(&compare_log.calls), last = atomic_load(&compare_log.last);
        printf("  compare progress: %" PRIu64 " calls, last %" PRIu64 "\n", calls, last);
        CHECK(calls > 0, "compare progress never called");
        CHECK(!atomic_load(&compare_log.went_backwards), "compare progress went backwards");
        CHECK(last > 0 && last <= diff.uncompressed_size,
              "compare progress ended at %" PRIu64 " of %" PRIu64, last, diff.uncompressed_size);
    }

    /* Apply onto a copy of lower, reading from the fd's offset just past the prefix. */
    int in_fd = open(layer, O_RDONLY | O_CLOEXEC);
    if (in_fd < 0 || lseek(in_fd, (off_t)(sizeof prefix - 1), SEEK_SET) < 0)
        DIE("open %s: %s", layer, strerror(errno));
    struct progress_log apply_log = {0};
    layerdiff_apply_options apply_options;
    memset(&apply_options, 0, sizeof apply_options);
    apply_options.progress = record_progress;
    apply_options.progress_ctx = &apply_log;
    layerdiff_apply_result applied;
    memset(&applied, 0, sizeof applied);
    ok = expect_ok("apply", layerdiff_apply(root, in_fd, &apply_options, &applied));
    CHECK(fd_is_open(in_fd), "apply closed in_fd");
    close(in_fd);
    if (!ok)
        return;
    CHECK(strcmp(applied.media_type, "application/vnd.oci.image.layer.v1.tar") == 0,
          "apply media type %s", applied.media_type);
    CHECK(strcmp(applied.digest, diff.diff_id) == 0, "apply digest %s, diffID %s",
          applied.digest, diff.diff_id);
    CHECK(applied.size == diff.uncompressed_size, "apply size %" PRIu64 ", want %" PRIu64,
          applied.size, diff.uncompressed_size);
    uint64_t calls = atomic_load(&apply_log.calls), last = atomic_load(&apply_log.last);
    printf("  apply progress: %" PRIu64 " calls, last %" PRIu64 "\n", calls, last);
    CHECK(calls > 0, "apply progress never called");
    CHECK(!atomic_load(&apply_log.went_backwards), "apply progress went backwards");
    CHECK(last > 0 && last <= diff.size, "apply progress ended at %" PRIu64 " of %" PRIu64,
          last, diff.size);

    int differences = tree_diff(upper, root, 1);
    CHECK(differences == 0, "applied tree differs from upper in %d place(s)", differences);
    CHECK(same_inode(root, "c/new.bin", "c/new-link"), "hardlink group lost");
}

/* SOURCE_DATE_EPOCH clamps later mtimes in the layer, so the applied file gets the epoch. */
static void source_date_epoch(const char *dir)
{
    printf("source date epoch\n");
    char lower[4096], upper[4096], root[4096], layer[4096];
    path_join(lower, sizeof lower, dir, "epoch-lower");
    path_join(upper, sizeof upper, dir, "epoch-upper");
    path_join(root, sizeof root, dir, "epoch-root");
    path_join(layer, sizeof layer, dir, "epoch.tar");
    make_dir(dir, "epoch-lower", 0755);
    make_dir(dir, "epoch-upper", 0755);
    make_dir(dir, "epoch-root", 0755);
    build_lower(lower, 42);
    build_upper(upper, 42);
    build_lower(root, 42);

    const int64_t epoch = 1600000000; /* before a/change.txt's 1700000000 */
    layerdiff_compare_options options;
    memset(&options, 0, sizeof options);
    options.compression = LAYERDIFF_COMPRESSION_NONE;
    options.has_source_date_epoch = true;
    options.source_date_epoch = epoch;
    int out_fd = open(layer, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    layerdiff_compare_result diff;
    int ok = expect_ok("compare with epoch", layerdiff_compare(lower, upper, out_fd, &options, &diff));
    close(out_fd);
    if (!ok)
        return;
    int in_fd = open(layer, O_RDONLY | O_CLOEXEC);
    layerdiff_apply_result applied;
    ok = expect_ok("apply epoch layer", layerdiff_apply(root, in_fd, NULL, &applied));
    close(in_fd);
    if (!ok)
        return;
    char path[4096];
    struct stat st;
    path_join(path, sizeof path, root, "a/change.txt");
    CHECK(lstat(path, &st) == 0 && st.st_mtim.tv_sec == epoch,
          "a/change.txt mtime %lld, want the epoch %lld", (long long)st.st_mtim.tv_sec,
          (long long)epoch);
}

int main(void)
{
    char dir[4096];
    make_temp_dir(dir, sizeof dir, "roundtrip");
    for (size_t i = 0; i < sizeof variants / sizeof *variants; i++)
        round_trip(dir, &variants[i], (int)i);
    source_date_epoch(dir);
    remove_tree(dir);
    return test_finish("test_roundtrip");
}
