//! Compiles the protobuf definitions in `proto/` (orbit's API, the vendored CRI) into Rust with protox (a protobuf
//! compiler in Rust: no `protoc` to install) and tonic, and keeps the encoded descriptors
//! for gRPC reflection.

use prost::Message;

fn main() {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        ["orbit/api/v1/api.proto", "k8s/cri/v1/api.proto"],
        ["proto"],
    )
    .unwrap_or_else(|e| panic!("proto/: {e}"));
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("orbit_api_descriptor.bin"), fds.encode_to_vec())
        .expect("OUT_DIR is writable");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("the API's generated code");
}
