//! Writes the busybox test image (`jek_image::build::busybox_layout`) as an OCI layout:
//! `busybox-layout DIR [BUSYBOX]` (default /bin/busybox, Debian's busybox-static). Prints
//! the manifest digest. Used by ci/main.sh and the image benchmark.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), busybox) = (
        args.first(),
        args.get(1).map_or("/bin/busybox", String::as_str),
    ) else {
        eprintln!("usage: busybox-layout DIR [BUSYBOX]");
        std::process::exit(2);
    };
    match jek_image::build::busybox_layout(std::path::Path::new(dir), std::path::Path::new(busybox))
    {
        Ok(digest) => println!("{digest}"),
        Err(e) => {
            eprintln!("busybox-layout: {busybox} -> {dir}: {e} (apt install busybox-static)");
            std::process::exit(3);
        }
    }
}
