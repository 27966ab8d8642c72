//! Report output shared by the subcommands: one JSON object on a line, and human-readable
//! units for the tables.
//!
//! Owns formatting only; the reports themselves are defined by each subcommand.

use std::io::Write;

use serde::Serialize;

/// Prints `report` as one JSON object on one line of stdout.
pub fn json(report: &impl Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, report)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// "12.3 MB/s" (decimal units).
pub fn bytes_per_sec(v: f64) -> String {
    const UNITS: [&str; 4] = ["B/s", "kB/s", "MB/s", "GB/s"];
    let mut v = v;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = next;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes_per_sec(0.0), "0.0 B/s");
        assert_eq!(bytes_per_sec(999.0), "999.0 B/s");
        assert_eq!(bytes_per_sec(2_500_000.0), "2.5 MB/s");
        assert_eq!(bytes_per_sec(7e12), "7000.0 GB/s");
    }
}
