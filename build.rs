// Records the target triple so every run header can say what it ran on.
fn main() {
    println!("cargo:rustc-env=QUBA_TARGET={}", std::env::var("TARGET").unwrap());
    println!("cargo:rerun-if-changed=build.rs");
}
