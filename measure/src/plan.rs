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
//! | 13 | sysexts | each container segment (container order), then the container count |
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
//! - a container's event describes `jek:container:NAME MANIFEST CONFIG REFERENCE` (the
//!   image's manifest and config digests and the reference as the pod file wrote it) and
//!   its digest is the SHA-256 of the container segment; PCR 13 always ends with
//!   `jek:containers:N`, so a log that drops a container's event does not replay.

use jek_verifier::format::Role;
use jek_verifier::{Bundle, KeyId, Sha256Digest, Verified};

use jek_pod::image::ContainerSegment;

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
/// PCR of the container images (the UAPI registry's PCR for system extension images).
pub const PCR_CONTAINERS: u32 = 13;
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
    /// A container segment.
    pub const CONTAINER: u32 = 0x4A45_4B07;
    /// The number of container segments.
    pub const CONTAINERS: u32 = 0x4A45_4B08;
    /// A container segment added to a running pod sandbox.
    pub const CONTAINER_ADDED: u32 = 0x4A45_4B09;
}

/// Every PCR jek extends, ascending: what a quote must cover.
pub const PCRS: [u32; 7] = [
    PCR_KERNEL,
    PCR_AUTHORITY,
    PCR_CMDLINE,
    PCR_INITRAMFS,
    PCR_MANIFEST,
    PCR_POD,
    PCR_CONTAINERS,
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
    /// The segment of this container.
    Container(String),
    /// The number of container segments.
    Containers(usize),
    /// The segment of this container, added while the pod ran.
    ContainerAdded(String),
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
            Measured::Container(name) => write!(f, "the image of container {name}"),
            Measured::Containers(n) => write!(f, "the container count ({n})"),
            Measured::ContainerAdded(name) => {
                write!(f, "the image of container {name}, added while the pod ran")
            }
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

/// A tagged event whose digest is known already: a component's SHA-256 from the verified
/// manifest, which the verifier checked against its bytes (so a plan never hashes the
/// kernel again).
fn tagged_digest(
    pcr: u32,
    id: u32,
    text: &str,
    digest: Sha256Digest,
    what: Measured,
) -> PlannedEvent {
    PlannedEvent {
        what,
        event: Event {
            pcr,
            event_type: EV_EVENT_TAG,
            digest,
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

/// What a container's event says (its description, parsed back by the appraisal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// The container.
    pub container: String,
    /// The image manifest's digest.
    pub manifest: String,
    /// The image config's digest.
    pub config: String,
    /// The reference as the pod file wrote it.
    pub reference: String,
}

impl ContainerEvent {
    /// The event description.
    pub fn text(&self) -> String {
        format!(
            "jek:container:{} {} {} {}",
            self.container, self.manifest, self.config, self.reference
        )
    }

    /// The description of its event when it joined a running pod sandbox.
    pub fn added_text(&self) -> String {
        format!(
            "jek:container-added:{} {} {} {}",
            self.container, self.manifest, self.config, self.reference
        )
    }

    /// Parses a description written by [`ContainerEvent::text`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::parse_fields(text.strip_prefix("jek:container:")?)
    }

    /// Parses a description written by [`ContainerEvent::added_text`].
    pub fn parse_added(text: &str) -> Option<Self> {
        Self::parse_fields(text.strip_prefix("jek:container-added:")?)
    }

    fn parse_fields(rest: &str) -> Option<Self> {
        let mut it = rest.splitn(4, ' ');
        let (container, manifest, config, reference) =
            (it.next()?, it.next()?, it.next()?, it.next()?);
        if [container, manifest, config, reference]
            .iter()
            .any(|f| f.is_empty())
        {
            return None;
        }
        Some(ContainerEvent {
            container: container.into(),
            manifest: manifest.into(),
            config: config.into(),
            reference: reference.into(),
        })
    }
}

impl ContainerEvent {
    /// What the event of this container segment says.
    pub fn of(segment: &ContainerSegment) -> Self {
        ContainerEvent {
            container: segment.image.container.clone(),
            manifest: segment.image.manifest.clone(),
            config: segment.image.config_digest.clone(),
            reference: segment.image.reference.clone(),
        }
    }
}

/// The PCR 13 events of these containers: each one's description and segment digest, then
/// the count.
pub fn container_events(containers: &[(ContainerEvent, Sha256Digest)]) -> Vec<PlannedEvent> {
    let mut events: Vec<PlannedEvent> = containers
        .iter()
        .map(|(c, digest)| PlannedEvent {
            what: Measured::Container(c.container.clone()),
            event: Event {
                pcr: PCR_CONTAINERS,
                event_type: EV_EVENT_TAG,
                digest: *digest,
                data: tagged_data(tag::CONTAINER, &c.text()),
            },
        })
        .collect();
    events.push(textual(
        PCR_CONTAINERS,
        tag::CONTAINERS,
        &format!("jek:containers:{}", containers.len()),
        Measured::Containers(containers.len()),
    ));
    events
}

/// The PCR 13 event of a container segment (`digest`) added to a running pod sandbox:
/// extended by the host before the segment is sent to the guest.
pub fn added_container_event(container: &ContainerEvent, digest: Sha256Digest) -> PlannedEvent {
    tagged_digest(
        PCR_CONTAINERS,
        tag::CONTAINER_ADDED,
        &container.added_text(),
        digest,
        Measured::ContainerAdded(container.container.clone()),
    )
}

/// The container an event of a running pod sandbox names, if it is exactly the event
/// [`added_container_event`] makes of it (PCR, type, tag and text re-encoded).
pub fn added_container(event: &Event) -> Option<ContainerEvent> {
    if event.pcr != PCR_CONTAINERS
        || event.data.get(..4) != Some(&tag::CONTAINER_ADDED.to_le_bytes()[..])
    {
        return None;
    }
    let c = ContainerEvent::parse_added(&event.text())?;
    (added_container_event(&c, event.digest).event == *event).then_some(c)
}

/// The containers a log's PCR 13 events name as measured at boot, with their segment
/// digests, in log order.
pub fn containers_booted(log: &crate::EventLog) -> Vec<(ContainerEvent, Sha256Digest)> {
    log.events
        .iter()
        .filter(|e| {
            e.pcr == PCR_CONTAINERS && e.data.get(..4) == Some(&tag::CONTAINER.to_le_bytes()[..])
        })
        .filter_map(|e| Some((ContainerEvent::parse(&e.text())?, e.digest)))
        .collect()
}

/// The containers a log's PCR 13 events name, with their segment digests, in log order:
/// those measured at boot, then those added while the pod ran.
pub fn containers_in_log(log: &crate::EventLog) -> Vec<(ContainerEvent, Sha256Digest)> {
    log.events
        .iter()
        .filter(|e| e.pcr == PCR_CONTAINERS)
        .filter_map(|e| {
            if e.data.get(..4) == Some(&tag::CONTAINER.to_le_bytes()[..]) {
                Some((ContainerEvent::parse(&e.text())?, e.digest))
            } else {
                Some((added_container(e)?, e.digest))
            }
        })
        .collect()
}

/// The events a boot of `bundle` with kernel image `kernel`, pod configuration segment
/// `pod` and container segments `containers` extends, in extend order. Returns `None` when
/// the bundle has no component of role `kernel` (or `kernel` is not a kernel role).
pub fn plan(
    bundle: &Verified<Bundle>,
    kernel: Role,
    pod: &[u8],
    containers: &[ContainerSegment],
) -> Option<Vec<PlannedEvent>> {
    let images: Vec<(ContainerEvent, Sha256Digest)> = containers
        .iter()
        .map(|c| (ContainerEvent::of(c), Sha256Digest::of(&c.bytes)))
        .collect();
    plan_with_images(bundle, kernel, pod, &images)
}

/// [`plan`] with the containers given by their events and segment digests (what an
/// appraisal knows).
pub fn plan_with_images(
    bundle: &Verified<Bundle>,
    kernel: Role,
    pod: &[u8],
    images: &[(ContainerEvent, Sha256Digest)],
) -> Option<Vec<PlannedEvent>> {
    if !kernel.is_kernel() {
        return None;
    }
    bundle.component(kernel)?;
    let digest_of = |role: Role| bundle.manifest().component(role).map(|c| c.sha256);
    let kernel_tag = format!("jek:kernel:{}", kernel.name());
    let mut events = vec![tagged_digest(
        PCR_KERNEL,
        tag::KERNEL,
        &kernel_tag,
        digest_of(kernel)?,
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
    events.push(tagged_digest(
        PCR_INITRAMFS,
        tag::INITRAMFS,
        "jek:initramfs",
        digest_of(Role::Initramfs).unwrap_or_else(|| Sha256Digest::of(&[])),
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
    events.extend(container_events(images));
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
        let p = plan(&b, Role::BzImage, b"POD", &[]).unwrap();
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
                (
                    13,
                    EV_EVENT_TAG,
                    t(tag::CONTAINERS, "jek:containers:0"),
                    Sha256Digest::of(b"jek:containers:0")
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
            events: plan(&b, Role::BzImage, b"OTHER", &[])
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
    fn each_container_image_is_one_event_in_pcr_13() {
        let b = bundle();
        let seg = |name: &str, bytes: &[u8]| ContainerSegment {
            image: jek_pod::image::ContainerImage {
                container: name.into(),
                reference: "localhost:5000/busybox:1.35 x".into(),
                manifest: "sha256:m".into(),
                config_digest: "sha256:c".into(),
                config: Default::default(),
            },
            bytes: bytes.to_vec(),
        };
        let p = plan(&b, Role::BzImage, b"POD", &[seg("a", b"A"), seg("b", b"B")]).unwrap();
        let pcr13: Vec<&PlannedEvent> =
            p.iter().filter(|e| e.event.pcr == PCR_CONTAINERS).collect();
        assert_eq!(pcr13.len(), 3);
        assert_eq!(pcr13[0].event.digest, Sha256Digest::of(b"A"));
        assert_eq!(pcr13[1].what, Measured::Container("b".into()));
        assert_eq!(pcr13[2].event.text(), "jek:containers:2");
        let parsed = ContainerEvent::parse(&pcr13[0].event.text()).unwrap();
        assert_eq!(parsed.container, "a");
        assert_eq!(parsed.reference, "localhost:5000/busybox:1.35 x");
        assert_eq!(ContainerEvent::parse(&parsed.text()), Some(parsed));
        assert_eq!(ContainerEvent::parse("jek:container:a b c"), None);
        // Other images change PCR 13 and nothing else.
        let replay = |p: Vec<PlannedEvent>| {
            EventLog {
                events: p.into_iter().map(|e| e.event).collect(),
            }
            .replay()
        };
        let one = replay(p);
        let other = replay(plan(&b, Role::BzImage, b"POD", &[seg("a", b"A")]).unwrap());
        for pcr in PCRS {
            assert_eq!(one[&pcr] == other[&pcr], pcr != PCR_CONTAINERS, "PCR {pcr}");
        }
    }

    #[test]
    fn no_plan_for_a_kernel_the_bundle_lacks() {
        let b = bundle();
        assert!(plan(&b, Role::Vmlinux, b"", &[]).is_none());
        assert!(plan(&b, Role::Initramfs, b"", &[]).is_none());
    }
}
