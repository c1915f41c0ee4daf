//! Give the shared library its SONAME, so programs linked against liblayerdiff.so record
//! liblayerdiff.so.0 and keep working across compatible (0.x) upgrades.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,liblayerdiff.so.0");
    println!("cargo:rerun-if-changed=build.rs");
}
