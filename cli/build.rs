//! Link flags for the `walship` binary.

fn main() {
    // Pack the executable's relative relocations (DT_RELR, glibc >= 2.36, binutils >= 2.38):
    // PIE keeps ASLR, and the loader no longer reads 1.3 MB of `.rela.dyn` into memory at
    // every start (about a tenth of the process's resident set at a steady load).
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bin=walship=-Wl,-z,pack-relative-relocs");
    }
}
