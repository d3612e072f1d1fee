//! Compiles the protobuf definitions in `proto/` (orbit's API, the vendored CRI) into Rust with protox (a protobuf
//! compiler in Rust: no `protoc` to install) and tonic, and keeps the encoded descriptors
//! for gRPC reflection.

use prost::Message;

fn main() {
    // The binaries' debug sections (line tables, see Cargo.toml) zlib-compressed: a third of
    // their size, and std's backtraces still read them.
    println!("cargo:rustc-link-arg-bins=-Wl,--compress-debug-sections=zlib");
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        ["orbit/api/v1/api.proto", "k8s/cri/v1/api.proto"],
        ["proto"],
    )
    .unwrap_or_else(|e| panic!("proto/: {e}"));
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // Reflection on the read-only API service describes its own proto only: the CRI's
    // (mutating) services are compiled into the same crate but must not be advertised there.
    let api_only = protox::compile(["orbit/api/v1/api.proto"], ["proto"])
        .unwrap_or_else(|e| panic!("proto/: {e}"));
    std::fs::write(
        out.join("orbit_api_descriptor.bin"),
        api_only.encode_to_vec(),
    )
    .expect("OUT_DIR is writable");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("the API's generated code");
}
