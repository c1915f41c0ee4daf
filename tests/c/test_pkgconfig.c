/* Linked through pkg-config alone (dynamically, and with --static): the installed header and
 * library are complete and usable. Exercises calls that need no filesystem work. */
#include <stdio.h>
#include <string.h>

#include <layerdiff.h>

#ifndef EXPECTED_VERSION
#error "build with -DEXPECTED_VERSION=\"x.y.z\" (pkg-config --modversion layerdiff)"
#endif

int main(void)
{
    int failures = 0;
    if (strcmp(layerdiff_version(), EXPECTED_VERSION) != 0) {
        fprintf(stderr, "version %s, want %s\n", layerdiff_version(), EXPECTED_VERSION);
        failures++;
    }
    layerdiff_compare_result result;
    layerdiff_error *err = layerdiff_compare("/", NULL, 1, NULL, &result);
    if (layerdiff_error_kind(err) != LAYERDIFF_ERROR_INVALID_ARGUMENT) {
        fprintf(stderr, "compare(upper=NULL): kind %u, want INVALID_ARGUMENT\n", layerdiff_error_kind(err));
        failures++;
    }
    layerdiff_error_free(err);
    layerdiff_cancel *cancel = layerdiff_cancel_new();
    layerdiff_cancel_trigger(cancel);
    layerdiff_cancel_free(cancel);
    printf("layerdiff %s linked and called: %s\n", layerdiff_version(), failures ? "FAILED" : "ok");
    return failures != 0;
}
