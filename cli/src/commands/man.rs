//! `jek man --out-dir DIR`: man pages generated from the argument definitions with
//! clap_mangen: jek.1 and one jek-COMMAND.1 per subcommand (jek-tpm-list.1 for nested ones).

use std::path::PathBuf;

use jek_fsio::{write_atomic, Overwrite};

use crate::error::CliError;

/// Arguments of `jek man`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the pages (created if missing; existing pages are replaced).
    #[arg(long)]
    out_dir: PathBuf,
}

fn render(cmd: &clap::Command, name: &str, pages: &mut Vec<(String, Vec<u8>)>) {
    let cmd = cmd.clone().name(name.to_string());
    let mut page = Vec::new();
    // Rendering into memory cannot fail; a page that did would be left out, not half-written.
    if clap_mangen::Man::new(cmd.clone()).render(&mut page).is_ok() {
        pages.push((format!("{name}.1"), page));
    }
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        render(sub, &format!("{name}-{}", sub.get_name()), pages);
    }
}

/// Runs `jek man`.
pub fn run(args: Args) -> Result<(), CliError> {
    let mut pages = Vec::new();
    render(
        &<crate::Cli as clap::CommandFactory>::command(),
        "jek",
        &mut pages,
    );
    std::fs::create_dir_all(&args.out_dir).map_err(|source| jek_fsio::WriteError::Write {
        path: args.out_dir.clone(),
        source,
    })?;
    for (name, page) in &pages {
        write_atomic(&args.out_dir.join(name), page, 0o644, Overwrite::Allow)?;
    }
    outln!("{} pages in {}", pages.len(), args.out_dir.display());
    Ok(())
}
