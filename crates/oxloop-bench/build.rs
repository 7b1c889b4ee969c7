//! Builds the libuv echo server (`csrc/uv_echo.c`) when libuv's headers are
//! installed, and tells the crate where the program is (`OXLOOP_BENCH_UV_ECHO`).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=csrc/uv_echo.c");
    println!("cargo:rerun-if-changed=/usr/include/uv.h");
    if !Path::new("/usr/include/uv.h").exists() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("oxloop-uv-echo");
    let compiler = cc::Build::new().opt_level(2).get_compiler();
    let status = compiler
        .to_command()
        .arg("csrc/uv_echo.c")
        .arg("-o")
        .arg(&out)
        .arg("-luv")
        .status();
    match status {
        Ok(s) if s.success() => {
            println!("cargo:rustc-env=OXLOOP_BENCH_UV_ECHO={}", out.display());
        }
        other => println!("cargo:warning=libuv echo server not built: {other:?}"),
    }
}
