/* Shared helpers of the C tests: checks, temporary trees, tree comparison, digests.
 * Every test program includes this once; functions are static to keep each program alone. */
#ifndef LAYERDIFF_TEST_UTIL_H
#define LAYERDIFF_TEST_UTIL_H

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <layerdiff.h>

static atomic_int test_failures;

/* Keep stdout and stderr in order when both go to one log. */
__attribute__((constructor)) static void line_buffered_stdout(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
}

/* Record a failure (without stopping) when cond is false. */
#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: FAILED %s: ", __FILE__, __LINE__, #cond);         \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
            atomic_fetch_add(&test_failures, 1);                                      \
        }                                                                             \
    } while (0)

/* Stop the program: a setup step failed, so later checks would mean nothing. */
#define DIE(...)                                                                      \
    do {                                                                              \
        fprintf(stderr, "%s:%d: FATAL: ", __FILE__, __LINE__);                        \
        fprintf(stderr, __VA_ARGS__);                                                 \
        fputc('\n', stderr);                                                          \
        exit(2);                                                                      \
    } while (0)

static inline int test_finish(const char *program)
{
    int failures = atomic_load(&test_failures);
    if (failures) {
        fprintf(stderr, "%s: %d check(s) FAILED\n", program, failures);
        return 1;
    }
    printf("%s: all checks passed\n", program);
    return 0;
}

/* A call that must succeed; prints the error otherwise. Returns whether it succeeded. */
static inline int expect_ok(const char *what, layerdiff_error *err)
{
    if (err == NULL)
        return 1;
    CHECK(err == NULL, "%s: unexpected error kind %u errno %d: %s", what,
          layerdiff_error_kind(err), layerdiff_error_errno(err), layerdiff_error_message(err));
    layerdiff_error_free(err);
    return 0;
}

/* A call that must fail with `kind`; errnum < 0 = any errno; needle NULL = any message. */
static inline void expect_error(const char *what, layerdiff_error *err, uint32_t kind, int errnum,
                         const char *needle)
{
    if (err == NULL) {
        CHECK(err != NULL, "%s: succeeded, expected error kind %u", what, kind);
        return;
    }
    uint32_t got_kind = layerdiff_error_kind(err);
    int32_t got_errno = layerdiff_error_errno(err);
    const char *message = layerdiff_error_message(err);
    printf("  %-44s -> kind %u errno %d: %s\n", what, got_kind, got_errno, message);
    CHECK(got_kind == kind, "%s: kind %u, expected %u (%s)", what, got_kind, kind, message);
    if (errnum >= 0)
        CHECK(got_errno == errnum, "%s: errno %d, expected %d (%s)", what, got_errno, errnum,
              message);
    CHECK(message != NULL && message[0] != '\0', "%s: empty message", what);
    if (needle != NULL && message != NULL)
        CHECK(strstr(message, needle) != NULL, "%s: message %s lacks %s", what, message, needle);
    layerdiff_error_free(err);
}

/* ---- paths and files ---- */

static inline void path_join(char *out, size_t size, const char *a, const char *b)
{
    int n = snprintf(out, size, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= size)
        DIE("path too long: %s/%s", a, b);
}

/* A fresh directory under $TMPDIR (default /tmp); `out` receives its path. */
static inline void make_temp_dir(char *out, size_t size, const char *label)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    int n = snprintf(out, size, "%s/layerdiff-ctest-%s.XXXXXX", base, label);
    if (n < 0 || (size_t)n >= size)
        DIE("temp path too long");
    if (mkdtemp(out) == NULL)
        DIE("mkdtemp %s: %s", out, strerror(errno));
}

static inline int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "warning: remove %s: %s\n", path, strerror(errno));
    return 0;
}

static inline void remove_tree(const char *path)
{
    nftw(path, remove_entry, 32, FTW_DEPTH | FTW_PHYS);
}

static inline void write_file(const char *root, const char *rel, const void *data, size_t len,
                       mode_t mode)
{
    char path[4096];
    path_join(path, sizeof path, root, rel);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        DIE("create %s: %s", path, strerror(errno));
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0)
            DIE("write %s: %s", path, strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    if (fchmod(fd, mode) != 0) /* umask-proof */
        DIE("chmod %s: %s", path, strerror(errno));
    close(fd);
}

/* A file `rel` under root holding `len` bytes of `data`, opened with `flags` at offset 0. */
static inline int file_fd(const char *root, const char *rel, const void *data, size_t len,
                          int flags)
{
    char path[4096];
    write_file(root, rel, data, len, 0644);
    path_join(path, sizeof path, root, rel);
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0)
        DIE("open %s: %s", path, strerror(errno));
    return fd;
}

static inline void make_dir(const char *root, const char *rel, mode_t mode)
{
    char path[4096];
    path_join(path, sizeof path, root, rel);
    if (mkdir(path, mode) != 0 || chmod(path, mode) != 0)
        DIE("mkdir %s: %s", path, strerror(errno));
}

static inline void make_symlink(const char *root, const char *rel, const char *target)
{
    char path[4096];
    path_join(path, sizeof path, root, rel);
    if (symlink(target, path) != 0)
        DIE("symlink %s: %s", path, strerror(errno));
}

static inline void make_hardlink(const char *root, const char *existing, const char *rel)
{
    char from[4096], to[4096];
    path_join(from, sizeof from, root, existing);
    path_join(to, sizeof to, root, rel);
    if (link(from, to) != 0)
        DIE("link %s: %s", to, strerror(errno));
}

static inline void remove_path(const char *root, const char *rel)
{
    char path[4096];
    path_join(path, sizeof path, root, rel);
    remove_tree(path);
}

static inline void set_mtime(const char *root, const char *rel, time_t seconds)
{
    char path[4096];
    path_join(path, sizeof path, root, rel);
    struct timespec times[2] = {{seconds, 0}, {seconds, 0}};
    if (utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW) != 0)
        DIE("utimensat %s: %s", path, strerror(errno));
}

/* Deterministic pseudo-random bytes (xorshift), so each seed gives different content. */
static inline void fill_bytes(unsigned char *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
}

/* ---- sample trees: upper = lower + additions, changes, metadata changes and deletions ---- */

static const char *const tree_entries_by_depth[] = {
    /* deepest first, so setting a child's time never disturbs its parent afterwards */
    "a/keep.txt", "a/change.txt", "a/gone.txt", "b/inner/deep.txt", "b/inner", "b/top.txt",
    "c/new.bin", "c/new-link", "c/empty", "link", "owned.txt", "a", "b", "c",
};

/* Give every entry that exists a fixed mtime, so lower, upper and the applied root agree. */
static inline void stamp_times(const char *root)
{
    for (size_t i = 0; i < sizeof tree_entries_by_depth / sizeof *tree_entries_by_depth; i++) {
        char path[4096];
        struct stat st;
        path_join(path, sizeof path, root, tree_entries_by_depth[i]);
        if (lstat(path, &st) == 0)
            set_mtime(root, tree_entries_by_depth[i], (time_t)(1500000000 + 1000 * i));
    }
}

static inline void build_lower(const char *root, unsigned seed)
{
    char text[256];
    unsigned char blob[64 * 1024];
    make_dir(root, "a", 0755);
    snprintf(text, sizeof text, "keep %u\n", seed);
    write_file(root, "a/keep.txt", text, strlen(text), 0644);
    snprintf(text, sizeof text, "old content %u\n", seed);
    write_file(root, "a/change.txt", text, strlen(text), 0644);
    write_file(root, "a/gone.txt", "to be deleted\n", 14, 0644);
    make_dir(root, "b", 0750);
    make_dir(root, "b/inner", 0700);
    fill_bytes(blob, sizeof blob, seed);
    write_file(root, "b/inner/deep.txt", blob, sizeof blob, 0640);
    write_file(root, "b/top.txt", "top\n", 4, 0644);
    make_symlink(root, "link", "a/keep.txt");
    stamp_times(root);
}

static inline void build_upper(const char *root, unsigned seed)
{
    char text[256];
    size_t big_len = 256 * 1024 + seed; /* not a multiple of 512: exercises tar padding */
    unsigned char *big = malloc(big_len);
    if (big == NULL)
        DIE("out of memory");
    build_lower(root, seed);
    snprintf(text, sizeof text, "new, longer content for seed %u\n", seed);
    write_file(root, "a/change.txt", text, strlen(text), 0644);
    remove_path(root, "a/gone.txt");
    remove_path(root, "b");
    make_dir(root, "c", 0755);
    fill_bytes(big, big_len, seed + 1000);
    write_file(root, "c/new.bin", big, big_len, 0755);
    make_hardlink(root, "c/new.bin", "c/new-link");
    write_file(root, "c/empty", "", 0, 0600);
    write_file(root, "owned.txt", "owned\n", 6, 0644);
    char owned[4096];
    path_join(owned, sizeof owned, root, "owned.txt");
    if (lchown(owned, 1234 + seed, 5678) != 0)
        DIE("lchown %s: %s", owned, strerror(errno));
    char keep[4096];
    path_join(keep, sizeof keep, root, "a/keep.txt");
    if (chmod(keep, 0600) != 0)
        DIE("chmod %s: %s", keep, strerror(errno));
    stamp_times(root);
    /* the changed file must not look unchanged to a size+mtime comparison */
    set_mtime(root, "a/change.txt", 1700000000);
    free(big);
}

/* `<label>lower` and `<label>upper` under dir, built from `seed`; their paths go to lower and
 * upper (4096 bytes each). */
static inline void make_tree_pair(const char *dir, const char *label, unsigned seed, char *lower,
                                  char *upper)
{
    char name[256];
    snprintf(name, sizeof name, "%slower", label);
    path_join(lower, 4096, dir, name);
    make_dir(dir, name, 0755);
    build_lower(lower, seed);
    snprintf(name, sizeof name, "%supper", label);
    path_join(upper, 4096, dir, name);
    make_dir(dir, name, 0755);
    build_upper(upper, seed);
}

/* ---- tree comparison ---- */

static inline int read_whole(const char *path, unsigned char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap);
    size_t got;
    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            unsigned char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf == NULL)
        return -1;
    *data = buf;
    *len = n;
    return 0;
}

static inline int names_only(const struct dirent *d)
{
    return strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0;
}

/* Compare two trees: names, types, modes, owners, sizes, contents, symlink targets, link
 * counts, and mtimes of non-directories (a directory's mtime changes when an applied
 * whiteout removes one of its entries, as with containerd). Returns the number of
 * differences, printing each. `top` = do not compare the attributes of the roots. */
static inline int tree_diff(const char *want, const char *got, int top)
{
    int differences = 0;
    struct stat ws, gs;
    if (lstat(want, &ws) != 0) {
        fprintf(stderr, "  lstat %s: %s\n", want, strerror(errno));
        return 1;
    }
    if (lstat(got, &gs) != 0) {
        fprintf(stderr, "  missing %s (%s)\n", got, strerror(errno));
        return 1;
    }
    if (!top) {
        if (ws.st_mode != gs.st_mode) {
            fprintf(stderr, "  %s: mode %o, want %o\n", got, gs.st_mode, ws.st_mode);
            differences++;
        }
        if (ws.st_uid != gs.st_uid || ws.st_gid != gs.st_gid) {
            fprintf(stderr, "  %s: owner %u:%u, want %u:%u\n", got, gs.st_uid, gs.st_gid,
                    ws.st_uid, ws.st_gid);
            differences++;
        }
        if (!S_ISDIR(ws.st_mode) &&
            (ws.st_mtim.tv_sec != gs.st_mtim.tv_sec || ws.st_mtim.tv_nsec != gs.st_mtim.tv_nsec)) {
            fprintf(stderr, "  %s: mtime %lld, want %lld\n", got, (long long)gs.st_mtim.tv_sec,
                    (long long)ws.st_mtim.tv_sec);
            differences++;
        }
        if (!S_ISDIR(ws.st_mode) && ws.st_nlink != gs.st_nlink) {
            fprintf(stderr, "  %s: %ju links, want %ju\n", got, (uintmax_t)gs.st_nlink,
                    (uintmax_t)ws.st_nlink);
            differences++;
        }
    }
    if ((ws.st_mode & S_IFMT) != (gs.st_mode & S_IFMT))
        return differences + 1;
    if (S_ISREG(ws.st_mode)) {
        unsigned char *wd = NULL, *gd = NULL;
        size_t wl = 0, gl = 0;
        if (read_whole(want, &wd, &wl) != 0 || read_whole(got, &gd, &gl) != 0 || wl != gl ||
            memcmp(wd, gd, wl) != 0) {
            fprintf(stderr, "  %s: content differs (%zu bytes, want %zu)\n", got, gl, wl);
            differences++;
        }
        free(wd);
        free(gd);
    } else if (S_ISLNK(ws.st_mode)) {
        char wt[4096] = {0}, gt[4096] = {0};
        if (readlink(want, wt, sizeof wt - 1) < 0 || readlink(got, gt, sizeof gt - 1) < 0 ||
            strcmp(wt, gt) != 0) {
            fprintf(stderr, "  %s: symlink target %s, want %s\n", got, gt, wt);
            differences++;
        }
    } else if (S_ISDIR(ws.st_mode)) {
        struct dirent **wl = NULL, **gl = NULL;
        int wn = scandir(want, &wl, names_only, alphasort);
        int gn = scandir(got, &gl, names_only, alphasort);
        int i = 0, j = 0;
        while (i < wn || j < gn) {
            int order = i >= wn ? 1 : j >= gn ? -1 : strcmp(wl[i]->d_name, gl[j]->d_name);
            if (order < 0) {
                fprintf(stderr, "  %s/%s: missing\n", got, wl[i]->d_name);
                differences++;
                i++;
            } else if (order > 0) {
                fprintf(stderr, "  %s/%s: unexpected\n", got, gl[j]->d_name);
                differences++;
                j++;
            } else {
                char wp[4096], gp[4096];
                path_join(wp, sizeof wp, want, wl[i]->d_name);
                path_join(gp, sizeof gp, got, gl[j]->d_name);
                differences += tree_diff(wp, gp, 0);
                i++;
                j++;
            }
        }
        for (int k = 0; k < wn; k++)
            free(wl[k]);
        for (int k = 0; k < gn; k++)
            free(gl[k]);
        free(wl);
        free(gl);
    }
    return differences;
}

/* Whether two paths under root are one inode (a hardlink group survived). */
static inline int same_inode(const char *root, const char *a, const char *b)
{
    char pa[4096], pb[4096];
    struct stat sa, sb;
    path_join(pa, sizeof pa, root, a);
    path_join(pb, sizeof pb, root, b);
    return lstat(pa, &sa) == 0 && lstat(pb, &sb) == 0 && sa.st_ino == sb.st_ino &&
           sa.st_dev == sb.st_dev;
}

/* ---- external checks through standard tools ---- */

/* The sha256 digest ("sha256:<hex>") and size of what a shell pipeline prints, computed by
 * sha256sum and wc, independently of layerdiff. Returns 0 on success. */
static inline int shell_digest(const char *pipeline, char digest[72], uint64_t *size)
{
    char cmd[20000];
    if (snprintf(cmd, sizeof cmd, "%s | sha256sum", pipeline) >= (int)sizeof cmd)
        return -1;
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    char hex[65] = {0};
    int ok = fscanf(p, "%64s", hex) == 1;
    if (pclose(p) != 0 || !ok || strlen(hex) != 64)
        return -1;
    snprintf(digest, 72, "sha256:%s", hex);
    if (snprintf(cmd, sizeof cmd, "%s | wc -c", pipeline) >= (int)sizeof cmd)
        return -1;
    p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    unsigned long long n = 0;
    ok = fscanf(p, "%llu", &n) == 1;
    if (pclose(p) != 0 || !ok)
        return -1;
    *size = n;
    return 0;
}

static inline uint64_t file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        DIE("stat %s: %s", path, strerror(errno));
    return (uint64_t)st.st_size;
}

static inline int fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}

#endif /* LAYERDIFF_TEST_UTIL_H */
