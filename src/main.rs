//! The `tincan` binary: parse the command line, run it, and turn an error into one line on
//! stderr and a non-zero exit code. Nothing else happens here.

use std::process::ExitCode;

use clap::error::ErrorKind;

fn main() -> ExitCode {
    // First, before any file is opened: descriptors from 3 on may be sockets systemd passed.
    if let Err(e) = tincan::net::activation::receive() {
        eprintln!("tincan: {e}");
        return ExitCode::from(e.exit_code());
    }
    let cli = match tincan::cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                eprintln!(
                    "tincan: {}",
                    one_line(&e.render().to_string(), subcommand())
                );
                return ExitCode::from(tincan::error::EXIT_USAGE);
            }
        },
    };
    tincan::logging::init();
    match tincan::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tincan: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Clap's multi-line error as one sentence: what is wrong, its tip if it has one, and the
/// `--help` to read (`unexpected argument '--lisen' found; a similar argument exists:
/// '--listen'; see 'tincan serve --help'`).
fn one_line(rendered: &str, subcommand: Option<String>) -> String {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("the command line is not valid");
    let mut msg = first.strip_prefix("error: ").unwrap_or(first).to_string();
    let mut help = match subcommand {
        Some(sub) => format!("tincan {sub} --help"),
        None => "tincan --help".to_string(),
    };
    let flag = unknown_flag(&msg);
    if let Some(f) = &flag {
        msg = format!("unknown flag '{f}'");
    }
    for l in lines {
        if let Some(tip) = l.strip_prefix("tip: ") {
            if flag.is_some() {
                // "to pass '--tls' as a value, use '-- --tls'" answers a question nobody asked
                // when the word was meant as a flag; a near spelling is worth a question.
                if let Some(near) = tip.strip_prefix("a similar argument exists: ") {
                    msg.push_str(&format!(" (did you mean {near}?)"));
                }
                continue;
            }
            msg.push_str("; ");
            msg.push_str(tip);
        } else if let Some(values) = l
            .strip_prefix("[possible values: ")
            .and_then(|v| v.strip_suffix(']'))
        {
            msg.push_str("; use one of: ");
            msg.push_str(values);
        } else if msg.ends_with(':') && !l.starts_with("Usage: ") && !l.starts_with("For more") {
            // The list a message announces ("required arguments were not provided:").
            msg.push(' ');
            msg.push_str(l);
        } else if let Some(usage) = l.strip_prefix("Usage: ") {
            let words: Vec<&str> = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']))
                .collect();
            if !words.is_empty() {
                help = format!("{} --help", words.join(" "));
            }
        }
    }
    if let Some(hint) = flag.as_deref().and_then(|f| guessed_flag(f, &help)) {
        msg = format!(
            "unknown flag '{}'; {hint}",
            flag.as_deref().unwrap_or_default()
        );
    }
    format!("{}; see '{help}'", in_words(&msg))
}

/// The flag in clap's "unexpected argument '--tls' found", when the word is a flag (starts
/// with `-` and is not a negative number, which [`in_words`] explains).
fn unknown_flag(msg: &str) -> Option<String> {
    let word = msg
        .strip_prefix("unexpected argument '")?
        .strip_suffix("' found")?;
    let is_number = word[1..].parse::<f64>().is_ok();
    (word.starts_with('-') && word.len() > 1 && !is_number).then(|| word.to_string())
}

/// Flags other servers have that tincan spells otherwise: what to write instead, for the
/// subcommands whose `--help` is `help`.
fn guessed_flag(flag: &str, help: &str) -> Option<&'static str> {
    let servers = ["serve", "hello", "echo", "chat"];
    let is_server = servers.iter().any(|s| help == format!("tincan {s} --help"));
    let name = flag.split('=').next().unwrap_or(flag);
    match name {
        "--tls" | "--ssl" | "--https" if is_server => Some(
            "TLS is turned on by giving a certificate: --tls-cert FILE --tls-key FILE, \
             --tls-self-signed DIR or --acme DOMAIN",
        ),
        "--port" | "-p" if is_server => Some(
            "give the port with --listen (-l): -l 8080 on 127.0.0.1, -l :8080 on every interface",
        ),
        "--root" | "--dir" if help == "tincan serve --help" => {
            Some("the directory to serve is the argument itself: tincan serve DIR")
        }
        _ => None,
    }
}

/// Rust's parse errors, and clap's advice for a value that starts with '-', as a user would
/// say them.
fn in_words(msg: &str) -> String {
    const PLAIN: &[(&str, &str)] = &[
        ("invalid digit found in string", "not a whole number"),
        ("invalid float literal", "not a number"),
        ("number too large to fit in target type", "too large"),
        ("cannot parse integer from empty string", "empty"),
        (
            "invalid port value",
            "the port must be a number from 0 to 65535",
        ),
        ("invalid IP address syntax", "not an IP address"),
        (
            "invalid socket address syntax",
            "not an address of the form HOST:PORT",
        ),
    ];
    // "unexpected argument '-1' found; to pass '-1' as a value, use '-- -1'": a negative
    // number given to a flag that takes none (clap reads it as a flag). Only when it follows
    // a flag: `tincan echo -1` is a stray argument, and clap's words stand.
    if let Some(rest) = msg.strip_prefix("unexpected argument '-") {
        let value = format!("-{}", rest.split('\'').next().unwrap_or(""));
        let args: Vec<String> = std::env::args().collect();
        let flag = args
            .windows(2)
            .find(|w| w[1] == value)
            .map(|w| w[0].clone())
            .filter(|f| f.starts_with('-'));
        if let (true, Some(flag)) = (value[1..].parse::<f64>().is_ok(), flag) {
            return format!("{flag} {value}: a negative number is not allowed here");
        }
    }
    // "invalid value '-1' for '--workers <N>': invalid digit found in string".
    if let Some(rest) = msg.strip_prefix("invalid value '-") {
        let value = rest.split('\'').next().unwrap_or("");
        if let (true, Some((head, _))) = (value.parse::<f64>().is_ok(), msg.rsplit_once(": ")) {
            return format!("{head}: a negative number is not allowed here");
        }
    }
    let mut out = msg.to_string();
    for (rust, words) in PLAIN {
        out = out.replace(rust, words);
    }
    out
}

/// The subcommand named on the command line, if it is one of ours (for the `--help` to suggest).
fn subcommand() -> Option<String> {
    let name = std::env::args().nth(1)?;
    tincan::cli::command()
        .find_subcommand(&name)
        .map(|c| c.get_name().to_string())
}
