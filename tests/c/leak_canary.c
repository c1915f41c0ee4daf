/* Deliberately leaks a layerdiff_error (allocated by Rust): the test harness runs this under the
 * same sanitizer settings as the real tests and requires LeakSanitizer to fail it, proving that
 * leaks, including the library's own allocations, would fail the C tests. */
#include <stdio.h>

#include <layerdiff.h>

layerdiff_error *leaked;

int main(void)
{
    layerdiff_compare_result result;
    leaked = layerdiff_compare(NULL, NULL, -1, NULL, &result);
    printf("error kind %u, deliberately not freed\n", layerdiff_error_kind(leaked));
    leaked = NULL; /* drop the last reference */
    return 0;
}
