// Records the target triple so every run header can say what it ran on, and
// compiles the JPEG decoder's C side (src/jpeg.rs says why it is C).
fn main() {
    println!("cargo:rustc-env=QUBA_TARGET={}", std::env::var("TARGET").unwrap());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/jpeg.c");
    // mozjpeg-sys (`links = "jpeg"`) exports its headers' folders: its
    // generated configuration, then the vendored library.
    let include = std::env::var_os("DEP_JPEG_INCLUDE").expect("mozjpeg-sys exports DEP_JPEG_INCLUDE");
    let dirs: Vec<_> = std::env::split_paths(&include).collect();
    // The version run headers name is the one whose sources were compiled.
    let version = dirs
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("jversion.h")).ok())
        .and_then(|h| h.lines().find_map(|l| l.trim().strip_prefix("#define JVERSION").map(|v| v.trim().trim_matches('"').to_string())))
        .expect("mozjpeg-sys writes jversion.h with JVERSION");
    println!("cargo:rustc-env=QUBA_MOZJPEG_SYS={version}");
    cc::Build::new().file("src/jpeg.c").includes(&dirs).warnings(true).compile("quba_jpeg");
}
