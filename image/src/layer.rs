//! Decompressing a layer into the tree: bounded (the image's uncompressed bytes count
//! against the policy's cap while they stream, so a decompression bomb stops at the cap),
//! and checked against the config's diff_id.

use std::io::Read;

use sha2::{Digest as _, Sha256};

use crate::manifest::{Compression, Layer};
use crate::tree::{RootFs, TreeError};

/// Why a layer cannot be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The layer's uncompressed bytes pass the cap.
    #[error("the image's uncompressed layers exceed the cap of {limit} bytes (images.max_rootfs_size in the policy)")]
    TooLarge {
        /// The cap.
        limit: u64,
    },
    /// The decompressor failed.
    #[error("layer {layer}: cannot decompress it")]
    Decompress {
        /// The layer.
        layer: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The uncompressed stream is not what the config's diff_id names.
    #[error("layer {layer}: its uncompressed digest is {actual}, but the image config's diff_id is {expected}")]
    DiffId {
        /// The layer.
        layer: String,
        /// The diff_id.
        expected: String,
        /// What was read.
        actual: String,
    },
    /// The tar stream cannot be applied.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// A reader that hashes and counts what passes, and fails past `limit`.
struct Metered<R> {
    inner: R,
    hash: Sha256,
    count: u64,
    limit: u64,
    exceeded: bool,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count = self.count.saturating_add(n as u64);
        if self.count > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("the image's size cap is reached"));
        }
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Applies `layer` (its verified blob bytes) to `tree`, counting its uncompressed bytes
/// against `budget` (what is left of the cap, `limit` in all).
pub fn unpack(
    layer: &Layer,
    blob: &[u8],
    tree: &mut RootFs,
    budget: &mut u64,
    limit: u64,
) -> Result<(), LayerError> {
    let decompress_err = |source| LayerError::Decompress {
        layer: layer.digest.clone(),
        source,
    };
    let reader: Box<dyn Read + '_> = match layer.compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(blob)
                .map_err(|e| decompress_err(std::io::Error::other(e.to_string())))?,
        ),
    };
    let mut metered = Metered {
        inner: reader,
        hash: Sha256::new(),
        count: 0,
        limit: *budget,
        exceeded: false,
    };
    let applied = tree.apply(&layer.digest, &mut metered);
    if metered.exceeded {
        return Err(LayerError::TooLarge { limit });
    }
    applied?;
    // The diff_id covers the whole stream, past the tar end-of-archive blocks too.
    let drained = std::io::copy(&mut metered, &mut std::io::sink());
    if metered.exceeded {
        return Err(LayerError::TooLarge { limit });
    }
    drained.map_err(decompress_err)?;
    let actual = format!("sha256:{}", hex::encode(metered.hash.finalize()));
    if actual != layer.diff_id {
        return Err(LayerError::DiffId {
            layer: layer.digest.clone(),
            expected: layer.diff_id.clone(),
            actual,
        });
    }
    *budget -= metered.count;
    Ok(())
}
