//! # jek-init: PID 1 of a pod
//!
//! The guest side of jek. Built as a static binary and placed at `/init` in the bundle's
//! initramfs. It mounts the pseudo file systems, brings up the loopback interface, prints
//! one machine-readable ready line, runs the pod's containers with their arguments and
//! environment, reaps every zombie, prints each exit status and powers the VM off. It never
//! hangs silently: every failure is printed and followed by power-off.
//!
//! The console protocol (one line each, JSON after a fixed tag) is what hosts and tests
//! read from the serial port:
//!
//! ```text
//! JEK-READY {"pod":"demo","kernel":"6.1.192-jek","loopback":"ok","containers":1}
//! JEK-EXIT {"container":"app","status":0}
//! JEK-POWEROFF {"status":0}
//! JEK-ERROR {"stage":"mount /proc","error":"EPERM: Operation not permitted"}
//! ```
#![forbid(unsafe_code)]

pub mod cpio;
pub mod netlink;
pub mod pod;
pub mod spec;
