//! `tincan completions SHELL` and `tincan man [COMMAND]...`: the shell completion script and
//! the manual pages, made from the same clap definition as `--help`, so they cannot drift from
//! the flags. Printed on stdout for the user or a package build to put where the shell and
//! `man` look.

use std::io::Write;

use clap::Args;

use crate::error::{Error, Result};

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  tincan completions bash > ~/.local/share/bash-completion/completions/tincan
  tincan completions zsh > ~/.zfunc/_tincan     (with fpath+=(~/.zfunc) before compinit)
  tincan completions fish > ~/.config/fish/completions/tincan.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  tincan man | man -l -                       the page of tincan itself
  tincan man serve | man -l -                 tincan-serve(1), every flag of serve
  tincan man bench http > tincan-bench-http.1
  for c in '' serve hello echo send chat talk bench completions man; do
    tincan man $c > tincan${c:+-$c}.1; done     every page, for /usr/share/man/man1")]
pub struct ManArgs {
    /// The subcommand whose page to print (`serve`, or `bench http`); none: tincan's own page,
    /// which lists the subcommands.
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `tincan completions`: the script for `cmd`, the whole command line's parser.
pub fn completions(a: CompletionsArgs, mut cmd: clap::Command) -> Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "tincan", &mut out);
    print(&out)
}

/// `tincan man`: the page of `cmd` (the whole command line's parser) or of a subcommand.
pub fn man(a: ManArgs, mut cmd: clap::Command) -> Result<()> {
    // Built, so that each subcommand knows its full name (`tincan-bench-http`).
    cmd.build();
    let mut page = &cmd;
    let mut path = vec!["tincan".to_string()];
    for name in &a.command {
        page = page.find_subcommand(name).ok_or_else(|| {
            let names: Vec<&str> = page
                .get_subcommands()
                .map(|c| c.get_name())
                .filter(|n| *n != "help")
                .collect();
            let whose = path.join(" ");
            if names.is_empty() {
                Error::Usage(format!(
                    "`{whose}` has no subcommands; use `tincan man {}`",
                    path[1..].join(" ")
                ))
            } else {
                Error::Usage(format!(
                    "`{whose}` has no subcommand `{name}`; its pages are {}",
                    names.join(", ")
                ))
            }
        })?;
        path.push(name.clone());
    }
    let man = clap_mangen::Man::new(page.clone())
        .title(path.join("-").to_uppercase())
        .source(format!("tincan {}", env!("CARGO_PKG_VERSION")))
        .manual("tincan manual");
    let mut out = Vec::new();
    let fail = |e| Error::io("cannot write the manual page", e);
    man.render_title(&mut out).map_err(fail)?;
    man.render_name_section(&mut out).map_err(fail)?;
    man.render_synopsis_section(&mut out).map_err(fail)?;
    man.render_description_section(&mut out).map_err(fail)?;
    man.render_options_section(&mut out).map_err(fail)?;
    if page.has_subcommands() {
        man.render_subcommands_section(&mut out).map_err(fail)?;
    }
    if let Some(after) = page.get_after_help() {
        out.extend_from_slice(preformatted_sections(&after.to_string()).as_bytes());
    }
    print(&out)
}

/// `--help`'s closing text (`Examples:`, `Exit status:`), laid out by hand in columns, as man
/// sections that keep their lines (`.nf`): roff would otherwise refill the columns.
fn preformatted_sections(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            if !out.is_empty() {
                out.push_str(".fi\n");
            }
            let title = line.trim_end_matches(':').to_uppercase();
            out.push_str(&format!(".SH \"{title}\"\n.nf\n"));
        } else if !out.is_empty() {
            out.push_str(&roff_line(line));
            out.push('\n');
        }
    }
    if !out.is_empty() {
        out.push_str(".fi\n");
    }
    out
}

/// One line of text as roff shows it: backslashes and hyphens escaped, characters past ASCII
/// named (`\[u2192]`, as groff_char(7) has them, so no input encoding is assumed), and a
/// leading `.` or `'` kept from reading as a request.
fn roff_line(line: &str) -> String {
    let mut escaped = String::with_capacity(line.len());
    for c in line.chars() {
        match c {
            '\\' => escaped.push_str("\\e"),
            '-' => escaped.push_str("\\-"),
            c if c.is_ascii() => escaped.push(c),
            c => escaped.push_str(&format!("\\[u{:04X}]", u32::from(c))),
        }
    }
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

fn print(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::io("writing to stdout", e))
}
