//! Puts `memory.x` where the linker looks and links with cortex-m-rt's `link.x`. The link
//! argument lives here rather than in `.cargo/config.toml` so that a `RUSTFLAGS` set by CI, which
//! replaces config rustflags, cannot drop it.

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
}
