//! Writes the busybox test image (`jek_image::build::busybox_layout`) as an OCI layout, or
//! with `--filler FILES SIZE` the larger benchmark image (`sized_layout`):
//! `busybox-layout DIR [--filler FILES SIZE]`. Reads /bin/busybox (Debian's
//! busybox-static; `$BUSYBOX` overrides). Prints the manifest digest. Used by ci/main.sh
//! and the image benchmark.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let busybox = std::env::var("BUSYBOX").unwrap_or_else(|_| "/bin/busybox".into());
    let busybox = std::path::Path::new(&busybox);
    let result = match args.as_slice() {
        [dir] => jek_image::build::busybox_layout(dir.as_ref(), busybox),
        [dir, flag, files, size] if flag == "--filler" => match (files.parse(), size.parse()) {
            (Ok(f), Ok(s)) => jek_image::build::sized_layout(dir.as_ref(), busybox, f, s),
            _ => Err(std::io::Error::other("--filler takes two numbers")),
        },
        _ => {
            eprintln!("usage: busybox-layout DIR [--filler FILES SIZE]");
            std::process::exit(2);
        }
    };
    match result {
        Ok(digest) => println!("{digest}"),
        Err(e) => {
            eprintln!(
                "busybox-layout: {}: {e} (apt install busybox-static)",
                busybox.display()
            );
            std::process::exit(3);
        }
    }
}
