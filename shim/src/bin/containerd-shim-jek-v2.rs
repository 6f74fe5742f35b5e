//! `containerd-shim-jek-v2`: containerd starts it for the `io.containerd.jek.v2` runtime.
//! Its log (tracing events, forwarded as `log` records) goes to containerd's log through
//! the bundle's `log` FIFO, as containerd-shim sets it up.

fn main() {
    let config = containerd_shim::Config {
        // jek waits for its own children (swtpm_setup, swtpm, QEMU) and reads their exit
        // status; containerd-shim's reaper would take those statuses first (ECHILD), and
        // a pod has no container processes on the host for a subreaper to adopt.
        no_reaper: true,
        no_sub_reaper: true,
        ..Default::default()
    };
    containerd_shim::run::<jek_shim::Service>(jek_shim::RUNTIME_ID, Some(config));
}
