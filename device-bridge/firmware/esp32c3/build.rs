//! Adds esp-hal's linker script to the firmware binary.

fn main() {
    // Only the binary for the chip links against esp-hal; the host build of the library's unit
    // tests must not get the chip's linker script.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("riscv32") {
        println!("cargo:rustc-link-arg-bins=-Tlinkall.x");
    }
}
