//! The fleet page: one read-only HTML document with no build step, which reads
//! `GET /v1/pods` every two seconds and shows each pod's status, its failing claims with
//! why, the time of its last result and its recent status changes, and below them the
//! recent removals from `GET /v1/audit` (when, which pod, by whom, its last status).
//! Every value is set as text (`textContent`), never parsed as HTML. The document itself holds no data and is
//! public; the pods it shows need a reader's credential (a client certificate, or a bearer
//! token given in the URL's fragment, which the browser never sends).

/// The page.
pub const PAGE: &str = include_str!("page.html");
