//! The measurement plan: which bytes of a verified bundle (and of the pod configuration)
//! are extended into which PCR, in which order, with which event data.
//!
//! The allocation follows the UAPI Linux TPM PCR Registry where a use is defined:
//!
//! | PCR | registry name | jek events (in order) |
//! |---|---|---|
//! | 4 | boot-loader-code | the kernel image the VMM loads (bzImage or vmlinux) |
//! | 7 | secure-boot-policy | each accepted signer (sorted by key ID), then the security version |
//! | 8 | (grub: kernel command line) | the command line passed to the kernel |
//! | 9 | kernel-initrd | the bundle's initramfs |
//! | 11 | kernel-boot | the signed manifest (the bundle's identity) |
//! | 12 | kernel-config | the pod configuration segment (empty when there is none) |
//!
//! Event data (so that standard tools such as `tpm2_eventlog` read and check the log):
//!
//! - the command line is an `EV_IPL` event in grub's form: data `"kernel_cmdline: "` +
//!   command line + NUL, digest = SHA-256 of the command line bytes alone;
//! - everything else is an `EV_EVENT_TAG` event whose data is a `TCG_PCClientTaggedEvent`
//!   (`u32 taggedEventID`, `u32 taggedEventDataSize`, ASCII description). For the kernel
//!   image, initramfs, manifest and pod configuration the digest is the SHA-256 of those
//!   bytes; for signers and the security version the description is the measured value
//!   itself and the digest is its SHA-256.

use jek_verifier::format::Role;
use jek_verifier::{Bundle, KeyId, Sha256Digest, Verified};

use crate::eventlog::{Event, EV_EVENT_TAG, EV_IPL};

/// PCR of the kernel image.
pub const PCR_KERNEL: u32 = 4;
/// PCR of signers and security version.
pub const PCR_AUTHORITY: u32 = 7;
/// PCR of the command line.
pub const PCR_CMDLINE: u32 = 8;
/// PCR of the initramfs.
pub const PCR_INITRAMFS: u32 = 9;
/// PCR of the manifest.
pub const PCR_MANIFEST: u32 = 11;
/// PCR of the pod configuration.
pub const PCR_POD: u32 = 12;
/// `taggedEventID`s of jek's tagged events: `"JEK"` and a number.
pub mod tag {
    /// The kernel image.
    pub const KERNEL: u32 = 0x4A45_4B01;
    /// An accepted signer.
    pub const SIGNER: u32 = 0x4A45_4B02;
    /// The security version.
    pub const SECURITY_VERSION: u32 = 0x4A45_4B03;
    /// The initramfs.
    pub const INITRAMFS: u32 = 0x4A45_4B04;
    /// The signed manifest.
    pub const MANIFEST: u32 = 0x4A45_4B05;
    /// The pod configuration segment.
    pub const POD_CONFIG: u32 = 0x4A45_4B06;
}

/// Every PCR jek extends, ascending: what a quote must cover.
pub const PCRS: [u32; 6] = [
    PCR_KERNEL,
    PCR_AUTHORITY,
    PCR_CMDLINE,
    PCR_INITRAMFS,
    PCR_MANIFEST,
    PCR_POD,
];

/// What an event measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measured {
    /// The kernel image of this role.
    Kernel(Role),
    /// An accepted signer.
    Signer(KeyId),
    /// The bundle's security version.
    SecurityVersion(u64),
    /// The kernel command line.
    Cmdline,
    /// The initramfs.
    Initramfs,
    /// The signed manifest.
    Manifest,
    /// The pod configuration segment.
    PodConfig,
}

impl std::fmt::Display for Measured {
    /// What the event measures, in words: "the kernel (bzimage)", "signer <key ID>", ...
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Measured::Kernel(role) => write!(f, "the kernel ({})", role.name()),
            Measured::Signer(id) => write!(f, "signer {id}"),
            Measured::SecurityVersion(v) => write!(f, "security version {v}"),
            Measured::Cmdline => f.write_str("the command line"),
            Measured::Initramfs => f.write_str("the initramfs"),
            Measured::Manifest => f.write_str("the manifest"),
            Measured::PodConfig => f.write_str("the pod configuration"),
        }
    }
}

/// One planned extend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    /// What it measures.
    pub what: Measured,
    /// The event as logged and extended.
    pub event: Event,
}

/// A `TCG_PCClientTaggedEvent` with an ASCII description.
fn tagged_data(id: u32, text: &str) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + text.len());
    d.extend_from_slice(&id.to_le_bytes());
    d.extend_from_slice(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_le_bytes());
    d.extend_from_slice(text.as_bytes());
    d
}

/// A tagged event whose digest is of `bytes`.
fn tagged(pcr: u32, id: u32, text: &str, bytes: &[u8], what: Measured) -> PlannedEvent {
    PlannedEvent {
        what,
        event: Event {
            pcr,
            event_type: EV_EVENT_TAG,
            digest: Sha256Digest::of(bytes),
            data: tagged_data(id, text),
        },
    }
}

/// A tagged event whose description is the measured value.
fn textual(pcr: u32, id: u32, text: &str, what: Measured) -> PlannedEvent {
    tagged(pcr, id, text, text.as_bytes(), what)
}

/// The command line in grub's `EV_IPL` form.
fn cmdline_event(cmdline: &str) -> PlannedEvent {
    let mut data = b"kernel_cmdline: ".to_vec();
    data.extend_from_slice(cmdline.as_bytes());
    data.push(0);
    PlannedEvent {
        what: Measured::Cmdline,
        event: Event {
            pcr: PCR_CMDLINE,
            event_type: EV_IPL,
            digest: Sha256Digest::of(cmdline.as_bytes()),
            data,
        },
    }
}

/// The events a boot of `bundle` with kernel image `kernel` and pod configuration segment
/// `pod` extends, in extend order. Returns `None` when the bundle has no component of role
/// `kernel` (or `kernel` is not a kernel role).
pub fn plan(bundle: &Verified<Bundle>, kernel: Role, pod: &[u8]) -> Option<Vec<PlannedEvent>> {
    if !kernel.is_kernel() {
        return None;
    }
    let image = bundle.component(kernel)?;
    let kernel_tag = format!("jek:kernel:{}", kernel.name());
    let mut events = vec![tagged(
        PCR_KERNEL,
        tag::KERNEL,
        &kernel_tag,
        image,
        Measured::Kernel(kernel),
    )];
    for id in bundle.signers() {
        events.push(textual(
            PCR_AUTHORITY,
            tag::SIGNER,
            &format!("jek:signer:{id}"),
            Measured::Signer(*id),
        ));
    }
    let sv = bundle.manifest().security_version;
    events.push(textual(
        PCR_AUTHORITY,
        tag::SECURITY_VERSION,
        &format!("jek:security-version:{sv}"),
        Measured::SecurityVersion(sv),
    ));
    events.push(cmdline_event(bundle.cmdline()));
    let initramfs = bundle.component(Role::Initramfs).unwrap_or(&[]);
    events.push(tagged(
        PCR_INITRAMFS,
        tag::INITRAMFS,
        "jek:initramfs",
        initramfs,
        Measured::Initramfs,
    ));
    events.push(tagged(
        PCR_MANIFEST,
        tag::MANIFEST,
        "jek:manifest",
        bundle.statement(),
        Measured::Manifest,
    ));
    events.push(tagged(
        PCR_POD,
        tag::POD_CONFIG,
        "jek:pod-config",
        pod,
        Measured::PodConfig,
    ));
    Some(events)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::eventlog::EventLog;
    use ed25519_dalek::{Signer as _, SigningKey};
    use jek_verifier::dsse::{pae, Envelope, Signature, IN_TOTO_PAYLOAD_TYPE};
    use jek_verifier::format::encode;
    use jek_verifier::manifest::{Component, Manifest};
    use jek_verifier::{verify, Policy, PublicKey, TrustedKey, UnixTime};

    fn bundle() -> Verified<Bundle> {
        let key = SigningKey::from_bytes(&[3; 32]);
        let (k, i, c) = (
            b"KERNEL".as_slice(),
            b"INITRD".as_slice(),
            b"console=ttyS0".as_slice(),
        );
        let comp = |role, d: &[u8]| Component {
            role,
            size: d.len() as u64,
            sha256: Sha256Digest::of(d),
        };
        let m = Manifest {
            name: "m".into(),
            version: "1".into(),
            security_version: 5,
            kernel_release: "6.1.0".into(),
            created: "1970-01-01T00:00:00Z".into(),
            components: vec![
                comp(Role::BzImage, k),
                comp(Role::Initramfs, i),
                comp(Role::Cmdline, c),
            ],
            kernel: Default::default(),
        };
        let payload = m.to_statement_json().unwrap();
        let public = PublicKey::from_verifying_key(key.verifying_key());
        let env = Envelope {
            payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
            signatures: vec![Signature {
                keyid: public.id().to_string(),
                sig: key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &payload)).to_vec(),
            }],
            payload,
        };
        let bytes = encode(
            &[(Role::BzImage, k), (Role::Initramfs, i), (Role::Cmdline, c)],
            &env.to_json(),
        )
        .unwrap();
        let policy =
            Policy::new(vec![TrustedKey::new(public)], None, 0, Default::default()).unwrap();
        verify(bytes, &policy, UnixTime(0)).unwrap()
    }

    #[test]
    fn the_plan_measures_exactly_the_documented_bytes() {
        let b = bundle();
        let p = plan(&b, Role::BzImage, b"POD").unwrap();
        let got: Vec<(u32, u32, Vec<u8>, Sha256Digest)> = p
            .iter()
            .map(|e| {
                (
                    e.event.pcr,
                    e.event.event_type,
                    e.event.data.clone(),
                    e.event.digest,
                )
            })
            .collect();
        let signer = format!("jek:signer:{}", b.signers()[0]);
        let t = |id: u32, s: &str| tagged_data(id, s);
        assert_eq!(
            t(tag::INITRAMFS, "ab"),
            [0x04, 0x4b, 0x45, 0x4a, 2, 0, 0, 0, b'a', b'b']
        );
        assert_eq!(
            got,
            vec![
                (
                    4,
                    EV_EVENT_TAG,
                    t(tag::KERNEL, "jek:kernel:bzimage"),
                    Sha256Digest::of(b"KERNEL")
                ),
                (
                    7,
                    EV_EVENT_TAG,
                    t(tag::SIGNER, &signer),
                    Sha256Digest::of(signer.as_bytes())
                ),
                (
                    7,
                    EV_EVENT_TAG,
                    t(tag::SECURITY_VERSION, "jek:security-version:5"),
                    Sha256Digest::of(b"jek:security-version:5")
                ),
                (
                    8,
                    EV_IPL,
                    b"kernel_cmdline: console=ttyS0\0".to_vec(),
                    Sha256Digest::of(b"console=ttyS0")
                ),
                (
                    9,
                    EV_EVENT_TAG,
                    t(tag::INITRAMFS, "jek:initramfs"),
                    Sha256Digest::of(b"INITRD")
                ),
                (
                    11,
                    EV_EVENT_TAG,
                    t(tag::MANIFEST, "jek:manifest"),
                    b.manifest_digest()
                ),
                (
                    12,
                    EV_EVENT_TAG,
                    t(tag::POD_CONFIG, "jek:pod-config"),
                    Sha256Digest::of(b"POD")
                ),
            ]
        );
        let log = EventLog {
            events: p.into_iter().map(|e| e.event).collect(),
        };
        let pcrs = log.replay();
        assert_eq!(pcrs.keys().copied().collect::<Vec<_>>(), PCRS.to_vec());
        // A different pod configuration changes PCR 12 and nothing else.
        let other = EventLog {
            events: plan(&b, Role::BzImage, b"OTHER")
                .unwrap()
                .into_iter()
                .map(|e| e.event)
                .collect(),
        }
        .replay();
        for pcr in PCRS {
            assert_eq!(pcrs[&pcr] == other[&pcr], pcr != PCR_POD, "PCR {pcr}");
        }
    }

    #[test]
    fn no_plan_for_a_kernel_the_bundle_lacks() {
        let b = bundle();
        assert!(plan(&b, Role::Vmlinux, b"").is_none());
        assert!(plan(&b, Role::Initramfs, b"").is_none());
    }
}
