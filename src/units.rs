//! Human-friendly durations (`15m`, `90s`, `1h30m`) and sizes (`64KiB`, `1MiB`).

use std::time::Duration;

/// Parses `15m`, `90s`, `1h30m`, `250ms`. A bare number is refused: the unit
/// is part of the meaning.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{text:?} needs a unit, e.g. \"{text}s\" or \"{text}m\""
        ));
    }
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration ({e})"))
}

/// Parses `1024`, `64KiB`, `1MiB`, `2GiB` (also `KB`/`MB`/`GB` as powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like \"64KiB\" or \"1MiB\""))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("{other:?} is not a size unit (B, KiB, MiB, GiB)")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("15").unwrap_err().contains("unit"));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("2 KiB").unwrap(), 2048);
        assert!(parse_size("1 parsec").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }
}
