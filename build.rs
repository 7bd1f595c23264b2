//! Compiles the protobuf schemas in `proto/` into Rust with `prost-build`.
//!
//! The schemas are parsed by `protox`, a protobuf compiler written in Rust,
//! so building the crate needs nothing but cargo: no `protoc` binary is
//! looked for or run. The generated modules land in `OUT_DIR` (one file per
//! protobuf package) and are included by `src/proto.rs`.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // A directory makes cargo rescan it, so added or removed schemas count.
    println!("cargo:rerun-if-changed=proto");

    let dir = Path::new("proto");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("reading an entry of proto/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    // A stable order keeps the generated code, and so rebuilds, stable.
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let fds = protox::compile(&files, [dir]).unwrap_or_else(|e| panic!("{e}"));
    prost_build::Config::new()
        // The envelope's body is handed on without a copy.
        .bytes([".rpc.Envelope.body"])
        // `prost::Name` gives each message its protobuf name for errors.
        .enable_type_names()
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating Rust from {}: {e}", dir.display()));
}
