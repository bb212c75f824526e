//! PLACEHOLDER build script (the CUDA helper owns it).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
