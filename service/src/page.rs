//! The fleet page: one read-only HTML document with no build step, which reads
//! `GET /v1/pods` every two seconds and shows each pod's status, its failing claims with
//! why, the time of its last result and its recent status changes. Every value is set as
//! text (`textContent`), never parsed as HTML.

/// The page.
pub const PAGE: &str = include_str!("page.html");
