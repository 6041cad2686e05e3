//! The node's wire codecs, compiled here on their own so the decoder fuzz targets need
//! none of the node's dependencies. The files are the node's own (`src/wire/`), included
//! by path: what is fuzzed is exactly what the node runs.

#[path = "../../src/wire/mod.rs"]
pub mod wire;
