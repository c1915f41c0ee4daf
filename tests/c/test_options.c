/* The option and result structs as the installed header lays them out: sizes and offsets fixed
 * for .so.0, the all-zero struct (memset or `= {0}`) equal to NULL options, level 0 the
 * compression's default, every nonzero reserved field rejected by name before any I/O, the
 * reserved space of results zeroed on success, and expected_diff_id checked. */
#include "test_util.h"

#include <stddef.h>

/* The layout of .so.0 on 64-bit targets; a field is only ever added by taking reserved space. */
#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(layerdiff_compare_options) == 176, "compare options size");
_Static_assert(offsetof(layerdiff_compare_options, has_source_date_epoch) == 8, "compare options");
_Static_assert(offsetof(layerdiff_compare_options, reserved_bytes) == 9, "compare options");
_Static_assert(offsetof(layerdiff_compare_options, source_date_epoch) == 16, "compare options");
_Static_assert(offsetof(layerdiff_compare_options, progress_ctx) == 40, "compare options");
_Static_assert(offsetof(layerdiff_compare_options, reserved) == 48, "compare options");
_Static_assert(offsetof(layerdiff_compare_options, id_maps) == 128, "compare options");
_Static_assert(sizeof(layerdiff_apply_options) == 176, "apply options size");
_Static_assert(offsetof(layerdiff_apply_options, reserved_bytes) == 6, "apply options");
_Static_assert(offsetof(layerdiff_apply_options, parents) == 8, "apply options");
_Static_assert(offsetof(layerdiff_apply_options, progress_ctx) == 40, "apply options");
_Static_assert(offsetof(layerdiff_apply_options, expected_diff_id) == 48, "apply options");
_Static_assert(offsetof(layerdiff_apply_options, reserved) == 56, "apply options");
_Static_assert(offsetof(layerdiff_apply_options, overlay_xattrs) == 112, "apply options");
_Static_assert(offsetof(layerdiff_apply_options, overlay_whiteout) == 116, "apply options");
_Static_assert(offsetof(layerdiff_apply_options, devices) == 120, "apply options");
_Static_assert(offsetof(layerdiff_apply_options, ignore_chown_errors) == 124, "apply options");
_Static_assert(offsetof(layerdiff_apply_options, reserved_bytes2) == 125, "apply options");
_Static_assert(offsetof(layerdiff_apply_options, unpack_threads) == 128, "apply options");
_Static_assert(offsetof(layerdiff_apply_options, reserved_word) == 132, "apply options");
_Static_assert(offsetof(layerdiff_apply_options, id_maps) == 136, "apply options");
_Static_assert(sizeof(layerdiff_compare_result) == 288, "compare result size");
_Static_assert(offsetof(layerdiff_compare_result, reserved) == 224, "compare result");
_Static_assert(sizeof(layerdiff_apply_result) == 208, "apply result size");
_Static_assert(offsetof(layerdiff_apply_result, reserved) == 144, "apply result");
#endif

#define COUNT(array) (sizeof(array) / sizeof *(array))

/* The layer a successful compare writes with `options` (NULL allowed); the caller frees it. */
static unsigned char *layer_bytes(const char *dir, const char *lower, const char *upper,
                                  const layerdiff_compare_options *options, size_t *len,
                                  layerdiff_compare_result *result)
{
    char path[4096];
    path_join(path, sizeof path, dir, "layer");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        DIE("create %s: %s", path, strerror(errno));
    int ok = expect_ok("compare", layerdiff_compare(lower, upper, fd, options, result));
    close(fd);
    unsigned char *data = NULL;
    if (!ok || read_whole(path, &data, len) != 0)
        DIE("no layer from compare");
    return data;
}

static int same_bytes(const unsigned char *a, size_t a_len, const unsigned char *b, size_t b_len)
{
    return a_len == b_len && memcmp(a, b, a_len) == 0;
}

static int all_zero(const uint64_t *words, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (words[i] != 0)
            return 0;
    return 1;
}

static void test_zero_is_the_default(const char *dir, const char *lower, const char *upper)
{
    printf("the all-zero options are the default, as NULL\n");
    layerdiff_compare_result result;
    memset(&result, 0xA5, sizeof result);
    size_t null_len, memset_len, init_len;
    unsigned char *with_null = layer_bytes(dir, lower, upper, NULL, &null_len, &result);
    CHECK(all_zero(result.reserved, COUNT(result.reserved)), "compare result reserved not zeroed");

    layerdiff_compare_options zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    unsigned char *with_memset = layer_bytes(dir, lower, upper, &zeroed, &memset_len, &result);
    layerdiff_compare_options initialized = {0};
    unsigned char *with_init = layer_bytes(dir, lower, upper, &initialized, &init_len, &result);
    CHECK(same_bytes(with_null, null_len, with_memset, memset_len),
          "memset(0) options give another layer than NULL");
    CHECK(same_bytes(with_null, null_len, with_init, init_len),
          "= {0} options give another layer than NULL");
    CHECK(strcmp(result.media_type, "application/vnd.oci.image.layer.v1.tar+gzip") == 0,
          "zeroed options give %s", result.media_type);

    /* Apply with zeroed options, reading the layer just written. */
    char layer[4096], root[4096];
    path_join(layer, sizeof layer, dir, "zero.layer");
    write_file(dir, "zero.layer", with_null, null_len, 0644);
    path_join(root, sizeof root, dir, "zero-root");
    make_dir(dir, "zero-root", 0755);
    build_lower(root, 1);
    int in_fd = open(layer, O_RDONLY | O_CLOEXEC);
    layerdiff_apply_options apply_zeroed = {0};
    layerdiff_apply_result applied;
    memset(&applied, 0xA5, sizeof applied);
    if (expect_ok("apply with zeroed options",
                  layerdiff_apply(root, in_fd, &apply_zeroed, &applied))) {
        CHECK(strcmp(applied.digest, result.diff_id) == 0, "apply digest %s, diffID %s",
              applied.digest, result.diff_id);
        CHECK(all_zero(applied.reserved, COUNT(applied.reserved)),
              "apply result reserved not zeroed");
        CHECK(tree_diff(upper, root, 1) == 0, "zeroed apply options did not give upper");
    }
    close(in_fd);
    free(with_null);
    free(with_memset);
    free(with_init);
}

static unsigned char *at_level(const char *dir, const char *lower, const char *upper,
                               uint32_t compression, int32_t level, size_t *len)
{
    layerdiff_compare_options options = {0};
    options.compression = compression;
    options.level = level;
    layerdiff_compare_result result;
    return layer_bytes(dir, lower, upper, &options, len, &result);
}

static void test_level_zero(const char *dir, const char *lower, const char *upper)
{
    printf("level 0 is the compression's default level\n");
    static const struct {
        const char *name;
        uint32_t compression;
        int32_t default_level;
        int32_t other_level;
    } cases[] = {
        {"gzip", LAYERDIFF_COMPRESSION_GZIP, 6, 1},
        {"zstd", LAYERDIFF_COMPRESSION_ZSTD, 3, 19},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        size_t zero_len, default_len, other_len;
        unsigned char *zero = at_level(dir, lower, upper, cases[i].compression, 0, &zero_len);
        unsigned char *def =
            at_level(dir, lower, upper, cases[i].compression, cases[i].default_level, &default_len);
        unsigned char *other =
            at_level(dir, lower, upper, cases[i].compression, cases[i].other_level, &other_len);
        CHECK(!same_bytes(other, other_len, def, default_len),
              "%s: levels %d and %d give the same bytes, the check below means nothing",
              cases[i].name, cases[i].other_level, cases[i].default_level);
        CHECK(same_bytes(zero, zero_len, def, default_len), "%s: level 0 is not level %d",
              cases[i].name, cases[i].default_level);
        free(zero);
        free(def);
        free(other);
    }
}

/* Apply `layer` onto dir/<name> (a fresh copy of the lower tree, or empty when `empty`) with
 * expected_diff_id set to `want`; returns the error (NULL on success). in_offset receives how
 * far in_fd was read. */
static layerdiff_error *apply_expecting(const char *dir, const char *name, int empty,
                                        const char *layer, const char *want, char *root,
                                        off_t *in_offset)
{
    path_join(root, 4096, dir, name);
    make_dir(dir, name, 0755);
    if (!empty)
        build_lower(root, 1);
    int in_fd = open(layer, O_RDONLY | O_CLOEXEC);
    if (in_fd < 0)
        DIE("open %s: %s", layer, strerror(errno));
    layerdiff_apply_options options = {0};
    options.expected_diff_id = want;
    layerdiff_apply_result applied;
    layerdiff_error *err = layerdiff_apply(root, in_fd, &options, &applied);
    if (err == NULL)
        CHECK(strcmp(applied.digest, want) == 0, "applied %s, expected %s", applied.digest, want);
    *in_offset = lseek(in_fd, 0, SEEK_CUR);
    close(in_fd);
    return err;
}

static int is_empty_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return 0;
    int entries = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return entries == 0;
}

static void test_expected_diff_id(const char *dir, const char *lower, const char *upper)
{
    printf("expected_diff_id: the right one passes, a wrong one fails, a malformed one is refused\n");
    layerdiff_compare_result result;
    size_t len;
    unsigned char *bytes = layer_bytes(dir, lower, upper, NULL, &len, &result);
    char layer[4096], root[4096];
    path_join(layer, sizeof layer, dir, "diffid.layer");
    write_file(dir, "diffid.layer", bytes, len, 0644);
    free(bytes);
    off_t offset;

    if (expect_ok("apply with the right diffID",
                  apply_expecting(dir, "diffid-right", 0, layer, result.diff_id, root, &offset)))
        CHECK(tree_diff(upper, root, 1) == 0, "apply with the right diffID did not give upper");

    char wrong[72], message[4096 + 256];
    snprintf(wrong, sizeof wrong, "%s", result.diff_id);
    wrong[70] = wrong[70] == '0' ? '1' : '0';
    layerdiff_error *err = apply_expecting(dir, "diffid-wrong", 0, layer, wrong, root, &offset);
    snprintf(message, sizeof message,
             "layer diffID is %s, not the expected %s (%s may be partly written)", result.diff_id,
             wrong, root);
    CHECK(err == NULL || strchr(layerdiff_error_message(err), '\n') == NULL,
          "mismatch message is more than one line: %s", layerdiff_error_message(err));
    expect_error("apply with a wrong diffID", err, LAYERDIFF_ERROR_INVALID_ARCHIVE, 0, message);

    static const char *const malformed[] = {
        "",
        "sha256:",
        "sha256:0123",
        "SHA256:0000000000000000000000000000000000000000000000000000000000000000",
        "sha256:000000000000000000000000000000000000000000000000000000000000000G",
        "sha512:0000000000000000000000000000000000000000000000000000000000000000",
        "sha256:00000000000000000000000000000000000000000000000000000000000000000",
    };
    for (size_t i = 0; i < COUNT(malformed); i++) {
        char name[64], needle[256];
        snprintf(name, sizeof name, "diffid-malformed%zu", i);
        snprintf(needle, sizeof needle, "invalid argument: diffID \"%s\" is not of the form",
                 malformed[i]);
        err = apply_expecting(dir, name, 1, layer, malformed[i], root, &offset);
        expect_error(needle, err, LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, needle);
        CHECK(offset == 0, "%s: a refused apply read in_fd (offset %lld)", malformed[i],
              (long long)offset);
        CHECK(is_empty_dir(root), "%s: a refused apply wrote into the root", malformed[i]);
    }
}

/* A call given options with a nonzero reserved field: rejected naming it, before any I/O. */
static void reject_compare(const char *dir, int out_fd, const layerdiff_compare_options *options,
                           const char *needle)
{
    layerdiff_compare_result result;
    expect_error(needle, layerdiff_compare(dir, dir, out_fd, options, &result),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, needle);
}

static void reject_apply(const char *dir, int in_fd, const layerdiff_apply_options *options,
                         const char *needle)
{
    layerdiff_apply_result result;
    expect_error(needle, layerdiff_apply(dir, in_fd, options, &result),
                 LAYERDIFF_ERROR_INVALID_ARGUMENT, 0, needle);
}

/* Set each element of options.field to `value` in turn, the rest of the struct zero: every call
 * must be rejected with a message naming that element (`shown` is how it prints the value). */
#define REJECT_EACH(reject, fd, type, options, field, value, shown)                        \
    for (size_t i = 0; i < COUNT((options).field); i++) {                                  \
        char needle[128];                                                                  \
        memset(&(options), 0, sizeof(options));                                            \
        (options).field[i] = (value);                                                      \
        snprintf(needle, sizeof needle, #type "." #field "[%zu] is " shown, i);            \
        reject(dir, fd, &(options), needle);                                               \
    }

static void test_reserved_rejected(const char *dir, int out_fd, int in_fd)
{
    printf("nonzero reserved fields are rejected by name\n");
    layerdiff_compare_options compare;
    REJECT_EACH(reject_compare, out_fd, layerdiff_compare_options, compare, reserved_bytes, 0xA5,
                "0xa5");
    REJECT_EACH(reject_compare, out_fd, layerdiff_compare_options, compare, reserved, 1, "0x1");
    CHECK(lseek(out_fd, 0, SEEK_END) == 0, "a rejected compare wrote to out_fd");
    layerdiff_apply_options apply;
    REJECT_EACH(reject_apply, in_fd, layerdiff_apply_options, apply, reserved_bytes, 0x80, "0x80");
    REJECT_EACH(reject_apply, in_fd, layerdiff_apply_options, apply, reserved, UINT64_C(1) << 63,
                "0x8000000000000000");
    REJECT_EACH(reject_apply, in_fd, layerdiff_apply_options, apply, reserved_bytes2, 0x80,
                "0x80");
    REJECT_EACH(reject_apply, in_fd, layerdiff_apply_options, apply, reserved_word, 1, "0x1");
    CHECK(lseek(in_fd, 0, SEEK_CUR) == 0, "a rejected apply read in_fd");
}

int main(void)
{
    char dir[4096], lower[4096], upper[4096];
    make_temp_dir(dir, sizeof dir, "options");
    make_tree_pair(dir, "", 1, lower, upper);

    test_zero_is_the_default(dir, lower, upper);
    test_level_zero(dir, lower, upper);
    test_expected_diff_id(dir, lower, upper);

    int out_fd = file_fd(dir, "rejected.out", "", 0, O_RDWR);
    int in_fd = file_fd(dir, "rejected.in", "not a layer, and never read", 27, O_RDONLY);
    test_reserved_rejected(dir, out_fd, in_fd);
    close(out_fd);
    close(in_fd);

    remove_tree(dir);
    return test_finish("test_options");
}
