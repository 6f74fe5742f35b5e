//! The TPM 2.0 structures attestation reads and writes, in their marshalled (big-endian,
//! TPM2B = u16 size + bytes) form: TPM Library Part 2. Pure and strict: every parser
//! consumes its whole input and names the field it stopped at.

use sha2::{Digest, Sha256};

/// `TPM_GENERATED_VALUE`: the magic of every TPMS_ATTEST the TPM signs.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
/// `TPM_ALG_RSA`.
pub const ALG_RSA: u16 = 0x0001;
/// `TPM_ALG_SHA256`.
pub const ALG_SHA256: u16 = 0x000b;
/// `TPM_ALG_NULL`.
pub const ALG_NULL: u16 = 0x0010;
/// `TPM_ALG_ECDSA`.
pub const ALG_ECDSA: u16 = 0x0018;
/// `TPM_ALG_ECC`.
pub const ALG_ECC: u16 = 0x0023;
/// `TPM_ECC_NIST_P256`.
pub const ECC_NIST_P256: u16 = 0x0003;

/// `TPMA_OBJECT` bits an attestation key must carry.
pub mod attr {
    /// fixedTPM: the key cannot leave this TPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// fixedParent.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// sensitiveDataOrigin: the TPM generated the private key.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// restricted: signs only digests the TPM produced (quotes), never external data
    /// that starts with TPM_GENERATED_VALUE.
    pub const RESTRICTED: u32 = 1 << 16;
    /// decrypt.
    pub const DECRYPT: u32 = 1 << 17;
    /// sign.
    pub const SIGN: u32 = 1 << 18;
    /// What an AK must have set.
    pub const AK_REQUIRED: u32 =
        FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | RESTRICTED | SIGN;
}

/// A structure that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tpm2Error {
    /// The bytes end inside a field.
    #[error("{structure}: truncated at offset {offset} reading {field}")]
    Truncated {
        /// The structure.
        structure: &'static str,
        /// The field.
        field: &'static str,
        /// Where.
        offset: usize,
    },
    /// Bytes after the structure.
    #[error("{structure}: {extra} bytes after the end")]
    Trailing {
        /// The structure.
        structure: &'static str,
        /// How many.
        extra: usize,
    },
    /// A field with a value this parser does not accept.
    #[error("{structure}: {field} is {value:#x}, expected {expected}")]
    Unsupported {
        /// The structure.
        structure: &'static str,
        /// The field.
        field: &'static str,
        /// Its value.
        value: u32,
        /// What was expected.
        expected: &'static str,
    },
}

/// A cursor over marshalled bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    structure: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], structure: &'static str) -> Self {
        Reader {
            bytes,
            pos: 0,
            structure,
        }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Tpm2Error> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Tpm2Error::Truncated {
                structure: self.structure,
                field,
                offset: self.pos,
            });
        };
        let s = self.bytes.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, Tpm2Error> {
        Ok(self.take(1, field)?.first().copied().unwrap_or(0))
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, Tpm2Error> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, Tpm2Error> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, Tpm2Error> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn tpm2b(&mut self, field: &'static str) -> Result<&'a [u8], Tpm2Error> {
        let n = self.u16(field)?;
        self.take(usize::from(n), field)
    }

    fn expect(
        &self,
        field: &'static str,
        value: u32,
        want: u32,
        expected: &'static str,
    ) -> Result<(), Tpm2Error> {
        if value == want {
            Ok(())
        } else {
            Err(Tpm2Error::Unsupported {
                structure: self.structure,
                field,
                value,
                expected,
            })
        }
    }

    fn finish(self) -> Result<(), Tpm2Error> {
        let extra = self.bytes.len() - self.pos;
        if extra == 0 {
            Ok(())
        } else {
            Err(Tpm2Error::Trailing {
                structure: self.structure,
                extra,
            })
        }
    }
}

fn put_tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// One bank's PCR selection (`TPMS_PCR_SELECTION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank's hash algorithm.
    pub hash: u16,
    /// The selected PCR indices, ascending.
    pub pcrs: Vec<u32>,
}

impl PcrSelection {
    /// The selection bitmap (3 bytes for PCRs 0..=23).
    fn bitmap(&self) -> [u8; 3] {
        let mut b = [0u8; 3];
        for &p in &self.pcrs {
            if let Some(byte) = b.get_mut(usize::try_from(p / 8).unwrap_or(usize::MAX)) {
                *byte |= 1 << (p % 8);
            }
        }
        b
    }
}

/// A parsed `TPMS_ATTEST` of type quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// `qualifiedSigner`: the signing key's qualified name.
    pub qualified_signer: Vec<u8>,
    /// `extraData`: the verifier's nonce.
    pub extra_data: Vec<u8>,
    /// `clockInfo.clock`.
    pub clock: u64,
    /// `clockInfo.resetCount`.
    pub reset_count: u32,
    /// `clockInfo.restartCount`.
    pub restart_count: u32,
    /// `clockInfo.safe`: the clock was not set back since it was last reported.
    pub safe: bool,
    /// `firmwareVersion`.
    pub firmware_version: u64,
    /// The PCR selection the quote covers.
    pub selection: Vec<PcrSelection>,
    /// `pcrDigest`: the hash of the selected PCR values, concatenated in selection order.
    pub pcr_digest: Vec<u8>,
}

impl Quote {
    /// Parses TPMS_ATTEST bytes; the magic must be TPM_GENERATED_VALUE and the type a quote.
    pub fn parse(bytes: &[u8]) -> Result<Quote, Tpm2Error> {
        let mut r = Reader::new(bytes, "TPMS_ATTEST");
        let magic = r.u32("magic")?;
        r.expect(
            "magic",
            magic,
            TPM_GENERATED_VALUE,
            "TPM_GENERATED_VALUE (0xff544347)",
        )?;
        let kind = r.u16("type")?;
        r.expect(
            "type",
            u32::from(kind),
            u32::from(TPM_ST_ATTEST_QUOTE),
            "TPM_ST_ATTEST_QUOTE (0x8018)",
        )?;
        let qualified_signer = r.tpm2b("qualifiedSigner")?.to_vec();
        let extra_data = r.tpm2b("extraData")?.to_vec();
        let clock = r.u64("clockInfo.clock")?;
        let reset_count = r.u32("clockInfo.resetCount")?;
        let restart_count = r.u32("clockInfo.restartCount")?;
        let safe = match r.u8("clockInfo.safe")? {
            0 => false,
            1 => true,
            other => {
                return Err(Tpm2Error::Unsupported {
                    structure: "TPMS_ATTEST",
                    field: "clockInfo.safe",
                    value: u32::from(other),
                    expected: "YES (1) or NO (0)",
                })
            }
        };
        let firmware_version = r.u64("firmwareVersion")?;
        let count = r.u32("pcrSelect.count")?;
        if count > 16 {
            return Err(Tpm2Error::Unsupported {
                structure: "TPMS_ATTEST",
                field: "pcrSelect.count",
                value: count,
                expected: "at most 16 banks",
            });
        }
        let mut selection = Vec::new();
        for _ in 0..count {
            let hash = r.u16("pcrSelect.hash")?;
            let size = r.u8("pcrSelect.sizeofSelect")?;
            let bitmap = r.take(usize::from(size), "pcrSelect.pcrSelect")?;
            let mut pcrs = Vec::new();
            for (i, byte) in bitmap.iter().enumerate() {
                for bit in 0..8u32 {
                    if byte & (1 << bit) != 0 {
                        pcrs.push(u32::try_from(i).unwrap_or(u32::MAX).saturating_mul(8) + bit);
                    }
                }
            }
            selection.push(PcrSelection { hash, pcrs });
        }
        let pcr_digest = r.tpm2b("pcrDigest")?.to_vec();
        r.finish()?;
        Ok(Quote {
            qualified_signer,
            extra_data,
            clock,
            reset_count,
            restart_count,
            safe,
            firmware_version,
            selection,
            pcr_digest,
        })
    }

    /// Marshals back to TPMS_ATTEST bytes (for tests and fuzzing).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&TPM_GENERATED_VALUE.to_be_bytes());
        out.extend_from_slice(&TPM_ST_ATTEST_QUOTE.to_be_bytes());
        put_tpm2b(&mut out, &self.qualified_signer);
        put_tpm2b(&mut out, &self.extra_data);
        out.extend_from_slice(&self.clock.to_be_bytes());
        out.extend_from_slice(&self.reset_count.to_be_bytes());
        out.extend_from_slice(&self.restart_count.to_be_bytes());
        out.push(u8::from(self.safe));
        out.extend_from_slice(&self.firmware_version.to_be_bytes());
        out.extend_from_slice(
            &u32::try_from(self.selection.len())
                .unwrap_or(0)
                .to_be_bytes(),
        );
        for s in &self.selection {
            out.extend_from_slice(&s.hash.to_be_bytes());
            out.push(3);
            out.extend_from_slice(&s.bitmap());
        }
        put_tpm2b(&mut out, &self.pcr_digest);
        out
    }
}

/// An ECDSA `TPMT_SIGNATURE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcdsaSignature {
    /// The hash the TPM signed with.
    pub hash: u16,
    /// r.
    pub r: Vec<u8>,
    /// s.
    pub s: Vec<u8>,
}

impl EcdsaSignature {
    /// Parses TPMT_SIGNATURE bytes; only ECDSA is accepted.
    pub fn parse(bytes: &[u8]) -> Result<Self, Tpm2Error> {
        let mut r = Reader::new(bytes, "TPMT_SIGNATURE");
        let alg = r.u16("sigAlg")?;
        r.expect(
            "sigAlg",
            u32::from(alg),
            u32::from(ALG_ECDSA),
            "TPM_ALG_ECDSA (0x0018)",
        )?;
        let hash = r.u16("hash")?;
        let sig_r = r.tpm2b("signatureR")?.to_vec();
        let sig_s = r.tpm2b("signatureS")?.to_vec();
        r.finish()?;
        Ok(EcdsaSignature {
            hash,
            r: sig_r,
            s: sig_s,
        })
    }

    /// Marshals to TPMT_SIGNATURE bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&ALG_ECDSA.to_be_bytes());
        out.extend_from_slice(&self.hash.to_be_bytes());
        put_tpm2b(&mut out, &self.r);
        put_tpm2b(&mut out, &self.s);
        out
    }
}

/// The key material of a `TPMT_PUBLIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// An ECC key: curve and point.
    Ecc {
        /// `curveID`.
        curve: u16,
        /// `scheme` (TPM_ALG_NULL or a signing scheme).
        scheme: u16,
        /// x.
        x: Vec<u8>,
        /// y.
        y: Vec<u8>,
    },
    /// An RSA key.
    Rsa {
        /// `keyBits`.
        bits: u16,
        /// `exponent` (0 means 65537).
        exponent: u32,
        /// The modulus.
        modulus: Vec<u8>,
    },
}

/// A parsed `TPMT_PUBLIC`, with its original bytes (the name is computed over them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// `nameAlg`.
    pub name_alg: u16,
    /// `objectAttributes`.
    pub attributes: u32,
    /// The key.
    pub key: PublicKey,
    /// The marshalled TPMT_PUBLIC.
    pub bytes: Vec<u8>,
}

fn skip_sym_def(r: &mut Reader<'_>) -> Result<(), Tpm2Error> {
    let alg = r.u16("parameters.symmetric.algorithm")?;
    if alg != ALG_NULL {
        r.u16("parameters.symmetric.keyBits")?;
        r.u16("parameters.symmetric.mode")?;
    }
    Ok(())
}

fn read_scheme(r: &mut Reader<'_>, field: &'static str) -> Result<u16, Tpm2Error> {
    let alg = r.u16(field)?;
    if alg != ALG_NULL {
        r.u16("scheme.details.hashAlg")?;
    }
    Ok(alg)
}

impl Public {
    /// Parses TPMT_PUBLIC bytes (RSA or ECC keys).
    pub fn parse(bytes: &[u8]) -> Result<Public, Tpm2Error> {
        let mut r = Reader::new(bytes, "TPMT_PUBLIC");
        let kind = r.u16("type")?;
        let name_alg = r.u16("nameAlg")?;
        r.expect(
            "nameAlg",
            u32::from(name_alg),
            u32::from(ALG_SHA256),
            "TPM_ALG_SHA256 (0x000b)",
        )?;
        let attributes = r.u32("objectAttributes")?;
        r.tpm2b("authPolicy")?;
        let key = match kind {
            ALG_ECC => {
                skip_sym_def(&mut r)?;
                let scheme = read_scheme(&mut r, "parameters.scheme")?;
                let curve = r.u16("parameters.curveID")?;
                read_scheme(&mut r, "parameters.kdf")?;
                let x = r.tpm2b("unique.x")?.to_vec();
                let y = r.tpm2b("unique.y")?.to_vec();
                PublicKey::Ecc {
                    curve,
                    scheme,
                    x,
                    y,
                }
            }
            ALG_RSA => {
                skip_sym_def(&mut r)?;
                read_scheme(&mut r, "parameters.scheme")?;
                let bits = r.u16("parameters.keyBits")?;
                let exponent = r.u32("parameters.exponent")?;
                let modulus = r.tpm2b("unique.rsa")?.to_vec();
                PublicKey::Rsa {
                    bits,
                    exponent,
                    modulus,
                }
            }
            other => {
                return Err(Tpm2Error::Unsupported {
                    structure: "TPMT_PUBLIC",
                    field: "type",
                    value: u32::from(other),
                    expected: "TPM_ALG_ECC or TPM_ALG_RSA",
                })
            }
        };
        r.finish()?;
        Ok(Public {
            name_alg,
            attributes,
            key,
            bytes: bytes.to_vec(),
        })
    }

    /// Marshals a SHA-256-named TPMT_PUBLIC of `key` with `attributes` (no auth policy, no
    /// symmetric parameters; the scheme's hash is SHA-256). `Public::parse` reads it back.
    pub fn encode(attributes: u32, key: &PublicKey) -> Vec<u8> {
        let mut out = Vec::new();
        let scheme = |out: &mut Vec<u8>, alg: u16| {
            out.extend_from_slice(&alg.to_be_bytes());
            if alg != ALG_NULL {
                out.extend_from_slice(&ALG_SHA256.to_be_bytes());
            }
        };
        let kind = match key {
            PublicKey::Ecc { .. } => ALG_ECC,
            PublicKey::Rsa { .. } => ALG_RSA,
        };
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&ALG_SHA256.to_be_bytes());
        out.extend_from_slice(&attributes.to_be_bytes());
        put_tpm2b(&mut out, &[]);
        out.extend_from_slice(&ALG_NULL.to_be_bytes());
        match key {
            PublicKey::Ecc {
                curve,
                scheme: s,
                x,
                y,
            } => {
                scheme(&mut out, *s);
                out.extend_from_slice(&curve.to_be_bytes());
                scheme(&mut out, ALG_NULL);
                put_tpm2b(&mut out, x);
                put_tpm2b(&mut out, y);
            }
            PublicKey::Rsa {
                bits,
                exponent,
                modulus,
            } => {
                scheme(&mut out, ALG_NULL);
                out.extend_from_slice(&bits.to_be_bytes());
                out.extend_from_slice(&exponent.to_be_bytes());
                put_tpm2b(&mut out, modulus);
            }
        }
        out
    }

    /// The object's name: nameAlg followed by the SHA-256 of the TPMT_PUBLIC bytes.
    pub fn name(&self) -> Vec<u8> {
        let mut name = ALG_SHA256.to_be_bytes().to_vec();
        name.extend_from_slice(&Sha256::digest(&self.bytes));
        name
    }

    /// The uncompressed SEC1 point of an ECC key (`04 || x || y`), coordinates padded to
    /// 32 bytes.
    pub fn sec1_point(&self) -> Option<Vec<u8>> {
        let PublicKey::Ecc { x, y, .. } = &self.key else {
            return None;
        };
        if x.len() > 32 || y.len() > 32 {
            return None;
        }
        let mut p = vec![4u8];
        p.extend(std::iter::repeat_n(0, 32 - x.len()));
        p.extend_from_slice(x);
        p.extend(std::iter::repeat_n(0, 32 - y.len()));
        p.extend_from_slice(y);
        Some(p)
    }
}

/// The tpm2-tools "serialized" PCR file that `tpm2_checkquote -f` reads: the C structs
/// `TPML_PCR_SELECTION` (132 bytes) then `UINT32 count` then `count` × `TPML_DIGEST`
/// (532 bytes each, at most 8 digests per list), in host (little-endian) byte order.
pub fn tpm2_tools_pcrs(values: &[(u32, [u8; 32])]) -> Vec<u8> {
    let mut out = Vec::new();
    // TPML_PCR_SELECTION: count, then 16 TPMS_PCR_SELECTION of 8 bytes (hash u16,
    // sizeofSelect u8, pcrSelect[4], one byte of padding).
    let sel = PcrSelection {
        hash: ALG_SHA256,
        pcrs: values.iter().map(|(p, _)| *p).collect(),
    };
    out.extend_from_slice(&1u32.to_le_bytes());
    for i in 0..16 {
        let mut entry = [0u8; 8];
        if i == 0 {
            entry[..2].copy_from_slice(&ALG_SHA256.to_le_bytes());
            entry[2] = 3;
            entry[3..6].copy_from_slice(&sel.bitmap());
        }
        out.extend_from_slice(&entry);
    }
    let chunks: Vec<&[(u32, [u8; 32])]> = values.chunks(8).collect();
    out.extend_from_slice(&u32::try_from(chunks.len()).unwrap_or(0).to_le_bytes());
    for chunk in chunks {
        // TPML_DIGEST: count, then 8 TPM2B_DIGEST of 66 bytes (u16 size, 64-byte buffer).
        out.extend_from_slice(&u32::try_from(chunk.len()).unwrap_or(0).to_le_bytes());
        for i in 0..8 {
            let mut d = [0u8; 66];
            if let Some((_, v)) = chunk.get(i) {
                d[..2].copy_from_slice(&32u16.to_le_bytes());
                d[2..34].copy_from_slice(v);
            }
            out.extend_from_slice(&d);
        }
    }
    out
}

/// Fuzzing entry: every parser on arbitrary bytes. A parsed quote re-encodes to bytes that
/// parse to the same quote; a signature has one encoding; a public area has a name.
pub fn fuzz(data: &[u8]) {
    if let Ok(q) = Quote::parse(data) {
        if q.selection.iter().all(|s| s.pcrs.iter().all(|p| *p < 24)) {
            assert_eq!(Quote::parse(&q.to_bytes()).ok(), Some(q));
        }
    }
    if let Ok(s) = EcdsaSignature::parse(data) {
        assert_eq!(s.to_bytes(), data);
    }
    if let Ok(p) = Public::parse(data) {
        assert_eq!(p.name().len(), 34);
        let _ = p.sec1_point();
        let again = Public::parse(&Public::encode(p.attributes, &p.key));
        assert_eq!(
            again.map(|a| a.key).ok(),
            Some(p.key),
            "encode/parse round trip"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn quote() -> Quote {
        Quote {
            qualified_signer: vec![0, 0xb, 1, 2],
            extra_data: vec![9; 32],
            clock: 5,
            reset_count: 1,
            restart_count: 2,
            safe: true,
            firmware_version: 7,
            selection: vec![PcrSelection {
                hash: ALG_SHA256,
                pcrs: vec![4, 7, 8, 9, 11, 12],
            }],
            pcr_digest: vec![3; 32],
        }
    }

    #[test]
    fn quote_round_trips_and_refuses_damage() {
        let q = quote();
        let b = q.to_bytes();
        assert_eq!(Quote::parse(&b).unwrap(), q);
        let mut bad = b.clone();
        bad[0] ^= 1;
        assert!(matches!(
            Quote::parse(&bad),
            Err(Tpm2Error::Unsupported { field: "magic", .. })
        ));
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(
            Quote::parse(&long),
            Err(Tpm2Error::Trailing { extra: 1, .. })
        ));
        for n in 0..b.len() {
            assert!(Quote::parse(&b[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn public_areas_round_trip() {
        for key in [
            PublicKey::Ecc {
                curve: ECC_NIST_P256,
                scheme: ALG_ECDSA,
                x: vec![1; 32],
                y: vec![2; 32],
            },
            PublicKey::Rsa {
                bits: 2048,
                exponent: 0,
                modulus: vec![3; 256],
            },
        ] {
            let bytes = Public::encode(attr::AK_REQUIRED, &key);
            let p = Public::parse(&bytes).unwrap();
            assert_eq!((p.attributes, &p.key), (attr::AK_REQUIRED, &key));
            assert_eq!(p.bytes, bytes);
        }
    }

    #[test]
    fn signature_round_trips() {
        let s = EcdsaSignature {
            hash: ALG_SHA256,
            r: vec![1; 32],
            s: vec![2; 32],
        };
        assert_eq!(EcdsaSignature::parse(&s.to_bytes()).unwrap(), s);
    }

    #[test]
    fn serialized_pcr_file_has_the_tpm2_tools_layout() {
        let v: Vec<(u32, [u8; 32])> = [4, 7, 8, 9, 11, 12]
            .iter()
            .map(|p| (*p, [u8::try_from(*p).unwrap(); 32]))
            .collect();
        let f = tpm2_tools_pcrs(&v);
        assert_eq!(f.len(), 132 + 4 + 532);
        assert_eq!(&f[4..10], &[0x0b, 0, 3, 0x90, 0x1b, 0]);
    }
}
