//! How a run is shown: a table for people (stdout) or one JSON object for machines (`--json`).

use std::fmt::Write;
use std::time::Duration;

use serde_json::{json, Value};

use super::engine::{LoadOptions, Outcome};
use super::stats::ErrorKind;

/// The percentiles every report shows (besides the maximum).
pub const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

/// What was measured, for the report's first line.
#[derive(Clone, Debug)]
pub struct Run<'a> {
    /// `http`, `echo`, `chat`.
    pub kind: &'a str,
    /// The URL or address.
    pub target: &'a str,
    pub opts: &'a LoadOptions,
    pub outcome: &'a Outcome,
}

/// A duration the way a latency is read: µs below 1 ms, ms below 1 s, else s.
pub fn fmt_latency(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1e6 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// A byte count in binary units.
pub fn fmt_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0}{}", UNITS[u])
    } else {
        format!("{v:.2}{}", UNITS[u])
    }
}

fn mode(opts: &LoadOptions) -> String {
    match opts.rate {
        Some(r) => format!("open loop at {r} req/s"),
        None => "closed loop".into(),
    }
}

/// An open loop that could not keep its schedule says so: its rate is what was sent, not what
/// was asked (the latencies, timed from each intended send, show the cost).
fn shortfall(run: &Run) -> Option<String> {
    let asked = run.opts.rate?;
    let got = run.outcome.replies_per_sec();
    (got < asked * 0.9).then(|| {
        format!(
            "  behind schedule: {got:.1} replies/s of the {asked} asked ({:.0}% short)\n",
            (1.0 - got / asked) * 100.0
        )
    })
}

/// The table printed at the end of a run.
pub fn table(run: &Run) -> String {
    let o = run.outcome;
    let s = &o.stats;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} {}: {} connections, {} threads, {}, keep-alive {}, {:.2} s",
        run.kind,
        run.target,
        run.opts.connections,
        o.threads,
        mode(run.opts),
        if run.opts.keepalive { "on" } else { "off" },
        o.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        t,
        "  replies     {:>12}   {:>12.1} /s",
        s.replies,
        o.replies_per_sec()
    );
    if let Some(line) = shortfall(run) {
        t.push_str(&line);
    }
    let _ = writeln!(
        t,
        "  read        {:>12}   {:>12}/s   (written {})",
        fmt_bytes(s.bytes_read as f64),
        fmt_bytes(o.read_bytes_per_sec()),
        fmt_bytes(s.bytes_written as f64)
    );
    let _ = writeln!(
        t,
        "  connects    {:>12}   (in flight at the end: {}; connections with no reply: {})",
        s.connects, s.unfinished, s.starved
    );
    let _ = write!(t, "  latency    ");
    for (name, _) in PERCENTILES {
        let _ = write!(t, " {name:>9}");
    }
    let _ = writeln!(t, " {:>9} {:>9}", "max", "mean");
    let _ = write!(t, "             ");
    // No reply, no latency: a dash, not a 0 that reads as "instant".
    let shown = |d: Duration| {
        if s.has_samples() {
            fmt_latency(d)
        } else {
            "-".to_string()
        }
    };
    for (_, p) in PERCENTILES {
        let _ = write!(t, " {:>9}", shown(s.percentile(p)));
    }
    let _ = writeln!(t, " {:>9} {:>9}", shown(s.max()), shown(s.mean()));
    let total = s.errors.total();
    let _ = write!(t, "  errors      {total:>12}");
    if total > 0 {
        let parts: Vec<String> = ErrorKind::ALL
            .iter()
            .filter(|k| s.errors.get(**k) > 0)
            .map(|k| format!("{} {}", k, s.errors.get(*k)))
            .collect();
        let _ = write!(t, "   ({})", parts.join(", "));
    }
    let _ = writeln!(t);
    t
}

fn us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

/// The run as one JSON object (latencies in microseconds).
pub fn json(run: &Run) -> Value {
    let o = run.outcome;
    let s = &o.stats;
    let mut latency = serde_json::Map::new();
    for (name, p) in PERCENTILES {
        latency.insert(name.replace('.', "_"), json!(us(s.percentile(p))));
    }
    latency.insert("max".into(), json!(us(s.max())));
    latency.insert("mean".into(), json!(us(s.mean())));
    let mut errors = serde_json::Map::new();
    for k in ErrorKind::ALL {
        errors.insert(k.name().into(), json!(s.errors.get(k)));
    }
    errors.insert("total".into(), json!(s.errors.total()));
    json!({
        "kind": run.kind,
        "target": run.target,
        "connections": run.opts.connections,
        "threads": o.threads,
        "mode": if run.opts.rate.is_some() { "open" } else { "closed" },
        "rate": run.opts.rate,
        "keepalive": run.opts.keepalive,
        "elapsed_s": o.elapsed.as_secs_f64(),
        "replies": s.replies,
        "replies_per_sec": o.replies_per_sec(),
        "bytes_read": s.bytes_read,
        "bytes_dropped": s.bytes_dropped,
        "bytes_written": s.bytes_written,
        "read_bytes_per_sec": o.read_bytes_per_sec(),
        "connects": s.connects,
        "unfinished": s.unfinished,
        "starved_connections": s.starved,
        "warmup_s": run.opts.warmup.as_secs_f64(),
        "latency_us": latency,
        "errors": errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_and_sizes_read_in_sensible_units() {
        assert_eq!(fmt_latency(Duration::from_micros(250)), "250µs");
        assert_eq!(fmt_latency(Duration::from_micros(1500)), "1.50ms");
        assert_eq!(fmt_latency(Duration::from_millis(2500)), "2.50s");
        assert_eq!(fmt_bytes(512.0), "512B");
        assert_eq!(fmt_bytes(1536.0), "1.50KiB");
    }
}
