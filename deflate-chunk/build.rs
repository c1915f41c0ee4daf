//! Builds the vendored libdeflate compressor (see libdeflate.patch), its exported names
//! prefixed so that they cannot clash with a libdeflate the final program links too.

fn main() {
    let mut build = cc::Build::new();
    build
        .files([
            "libdeflate/lib/deflate_compress.c",
            "libdeflate/lib/utils.c",
            "libdeflate/lib/x86/cpu_features.c",
            "libdeflate/lib/arm/cpu_features.c",
        ])
        .include("libdeflate")
        .warnings(false)
        // Always optimized: the compressor is the hot loop of compare, also in test builds.
        .opt_level(2);
    for name in EXPORTED {
        build.define(name, Some(format!("layerdiff_{name}").as_str()));
    }
    build.compile("layerdiff_deflate");
    println!("cargo:rerun-if-changed=libdeflate");
}

/// Every external symbol of the four files (`nm --defined-only -g`), renamed.
const EXPORTED: &[&str] = &[
    "libdeflate_alloc_compressor",
    "libdeflate_alloc_compressor_ex",
    "libdeflate_deflate_compress",
    "libdeflate_deflate_compress_bound",
    "libdeflate_free_compressor",
    "libdeflate_get_compression_level",
    "libdeflate_set_memory_allocator",
    "libdeflate_default_malloc_func",
    "libdeflate_default_free_func",
    "libdeflate_aligned_malloc",
    "libdeflate_aligned_free",
    "libdeflate_x86_cpu_features",
    "libdeflate_init_x86_cpu_features",
    "libdeflate_arm_cpu_features",
    "libdeflate_init_arm_cpu_features",
    "libdeflate_assertion_failed",
    "libdeflate_memset",
    "libdeflate_memcpy",
    "libdeflate_memmove",
    "libdeflate_memcmp",
];
