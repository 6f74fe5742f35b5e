//! # jek-pod: the contract between the host and a pod's init
//!
//! Everything both sides of the VM boundary must agree on, in one small crate with no I/O,
//! used by the guest init, the builder and the loader alike:
//!
//! - [`spec`]: the pod spec the init runs (`/etc/jek/pod.json` or `/etc/jek/app.json`);
//! - [`segment`]: the pod segment, the exact `newc` bytes appended after the verified
//!   initramfs and measured into PCR 12;
//! - [`image`]: the container segment of a container with an OCI image, and the rules by
//!   which the init starts its process;
//! - [`cpio`]: the strict `newc` codec both of them are made of;
//! - [`console`]: the init's status lines on the serial console (`JEK-READY`, `JEK-EXIT`,
//!   `JEK-ERROR`, `JEK-POWEROFF`), written by the init and read by the loader;
//! - [`agent`]: the framed, bounded messages of a pod sandbox's agent channel.
//!
//! ```
//! use jek_pod::console::{ConsoleLine, PowerOff};
//! let line = ConsoleLine::PowerOff(PowerOff { status: 3 }).encode();
//! assert_eq!(line, "JEK-POWEROFF {\"status\":3}\n");
//! let back = ConsoleLine::parse(&line).and_then(Result::ok);
//! assert_eq!(back, Some(ConsoleLine::PowerOff(PowerOff { status: 3 })));
//! ```
#![forbid(unsafe_code)]

pub mod agent;
pub mod console;
pub mod cpio;
pub mod image;
pub mod segment;
pub mod spec;

pub use segment::{segment, SegmentError};
pub use spec::{Container, EnvVar, PodSpec};
