//! What a boot hands the VMM and what it measures, computed from verified bytes only.

use jek_pod::image::ContainerSegment;
use jek_pod::spec::PodSpec;

use crate::{plan, EventLog, PlannedEvent};
use jek_verifier::format::Role;
use jek_verifier::{Bundle, Verified};

/// What `jek predict --json` prints: the kernel booted, the PCR values and every event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Prediction {
    /// The kernel format (`bzimage` or `vmlinux`).
    pub kernel: &'static str,
    /// The PCR values the boot will leave.
    pub pcrs: crate::PcrValues,
    /// The events, in order.
    pub events: Vec<PredictedEvent>,
}

/// One predicted event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PredictedEvent {
    /// The PCR.
    pub pcr: u32,
    /// The TCG event type.
    #[serde(rename = "type")]
    pub event_type: u32,
    /// The SHA-256 extended.
    pub sha256: jek_verifier::Sha256Digest,
    /// The readable part of the event data: the tag text, or the EV_IPL string.
    pub data: String,
}

/// Why a payload cannot be assembled.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// `--kernel` named a role that is not a kernel image.
    #[error("{0} is not a kernel image role (use bzimage or vmlinux)")]
    NotAKernel(&'static str),
    /// The bundle has no component of the requested kernel format.
    #[error("the bundle has no {0} component")]
    NoKernel(&'static str),
    /// The pod spec cannot become a pod segment.
    #[error("cannot build the pod segment")]
    Pod(#[from] jek_pod::SegmentError),
    /// The container segments are not one per container with an image, in order.
    #[error("the container segments do not match the pod's containers with an image")]
    Containers,
}

/// Everything a VMM needs, borrowed from the verified bundle where possible.
#[derive(Debug)]
pub struct Payload<'a> {
    /// Which kernel image is booted.
    pub kernel_role: Role,
    /// The kernel image bytes (verified).
    pub kernel: &'a [u8],
    /// The verified initramfs with the pod segment and the container segments appended.
    pub initramfs: Vec<u8>,
    /// The pod segment alone (empty without a pod spec).
    pub pod_segment: Vec<u8>,
    /// The container records, in container order (their segments are in `initramfs`).
    pub containers: Vec<jek_pod::image::ContainerImage>,
    /// The command line, exactly as signed.
    pub cmdline: &'a str,
    /// The measurement plan.
    pub events: Vec<PlannedEvent>,
}

impl<'a> Payload<'a> {
    /// Assembles the payload for booting `kernel_role` from `bundle` with an optional pod
    /// and the segments of its containers' images (`jek_image::prepare`).
    pub fn new(
        bundle: &'a Verified<Bundle>,
        kernel_role: Role,
        pod: Option<&PodSpec>,
        containers: &[ContainerSegment],
    ) -> Result<Self, PayloadError> {
        if !kernel_role.is_kernel() {
            return Err(PayloadError::NotAKernel(kernel_role.name()));
        }
        let kernel = bundle
            .component(kernel_role)
            .ok_or(PayloadError::NoKernel(kernel_role.name()))?;
        let pod_segment = match pod {
            Some(spec) => jek_pod::segment(spec)?,
            None => Vec::new(),
        };
        let images = pod.map_or(0, |p| {
            p.containers.iter().filter(|c| c.image.is_some()).count()
        });
        let matches = pod.is_some_and(|p| {
            p.containers
                .iter()
                .filter(|c| c.image.is_some())
                .map(|c| c.name.as_str())
                .eq(containers.iter().map(|s| s.image.container.as_str()))
        });
        if containers.len() != images || (images > 0 && !matches) {
            return Err(PayloadError::Containers);
        }
        let base = bundle.component(Role::Initramfs).unwrap_or(&[]);
        let extra: usize = containers.iter().map(|c| c.bytes.len()).sum();
        let mut initramfs = Vec::with_capacity(base.len() + pod_segment.len() + extra);
        initramfs.extend_from_slice(base);
        initramfs.extend_from_slice(&pod_segment);
        for c in containers {
            initramfs.extend_from_slice(&c.bytes);
        }
        let events = plan(bundle, kernel_role, &pod_segment, containers)
            .ok_or(PayloadError::NoKernel(kernel_role.name()))?;
        Ok(Payload {
            kernel_role,
            kernel,
            initramfs,
            pod_segment,
            containers: containers.iter().map(|c| c.image.clone()).collect(),
            cmdline: bundle.cmdline(),
            events,
        })
    }

    /// The prediction of this boot.
    pub fn prediction(&self) -> Prediction {
        let log = self.event_log();
        Prediction {
            kernel: self.kernel_role.name(),
            pcrs: log.replay(),
            events: log
                .events
                .iter()
                .map(|e| PredictedEvent {
                    pcr: e.pcr,
                    event_type: e.event_type,
                    sha256: e.digest,
                    data: e.text(),
                })
                .collect(),
        }
    }

    /// The event log this boot will write.
    pub fn event_log(&self) -> EventLog {
        EventLog {
            events: self.events.iter().map(|e| e.event.clone()).collect(),
        }
    }
}

/// The kernel format a backend boots when none is asked for: bzImage if the bundle has
/// one, else vmlinux.
pub fn default_kernel(bundle: &Bundle) -> Role {
    if bundle.component(Role::BzImage).is_some() {
        Role::BzImage
    } else {
        Role::Vmlinux
    }
}
