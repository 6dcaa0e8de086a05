//! Numbers for people (issue 17): FLOPs, bytes and rates with SI prefixes and three
//! significant digits (`3.8144e4` FLOP is `38.1 kFLOP`, `5.32e9` bytes `5.32 GB`), durations in
//! the unit that keeps them readable. JSON output keeps raw numbers; only text uses these.

/// SI prefixes from 10^0 up, by thousands.
const PREFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];

/// `value` with an SI prefix on `unit` and three significant digits: `38.1 kFLOP`,
/// `5.32 GB`, `256 B` (whole numbers below 1000 as they are), `0 B`.
pub fn si(value: f64, unit: &str) -> String {
    if !value.is_finite() {
        return format!("{value} {unit}");
    }
    let mag = value.abs();
    if mag < 1000.0 && value.fract() == 0.0 {
        return format!("{value} {unit}");
    }
    if mag < 1000.0 {
        return format!("{} {unit}", three_digits(value));
    }
    let mut i = ((mag.log10() / 3.0).floor() as usize).min(PREFIXES.len() - 1);
    let mut m = value / 1000f64.powi(i as i32);
    // 999.96e3 rounds to "1000 k": that is 1.00 M.
    if m.abs() >= 999.5 && i + 1 < PREFIXES.len() {
        i += 1;
        m /= 1000.0;
    }
    format!("{} {}{unit}", three_digits(m), PREFIXES[i])
}

/// Three significant digits for 1 <= |x| < 1000 (fewer decimals as it grows), and for
/// smaller values two decimals more than their leading zeros.
fn three_digits(x: f64) -> String {
    let a = x.abs();
    if a >= 99.95 {
        format!("{x:.0}")
    } else if a >= 9.995 {
        format!("{x:.1}")
    } else if a >= 0.9995 || a == 0.0 {
        format!("{x:.2}")
    } else {
        let zeros = (-a.log10()).floor() as usize;
        format!("{x:.prec$}", prec = zeros + 2)
    }
}

/// A duration given in milliseconds, in s, ms, µs or ns with three significant digits:
/// `1.53 s`, `2.63 ms`, `412 µs`.
pub fn duration_ms(ms: f64) -> String {
    if !ms.is_finite() {
        return format!("{ms} ms");
    }
    let a = ms.abs();
    if a >= 999.95 {
        format!("{} s", three_digits(ms / 1e3))
    } else if a >= 0.99995 || a == 0.0 {
        format!("{} ms", three_digits(ms))
    } else if a >= 0.00099995 {
        format!("{} µs", three_digits(ms * 1e3))
    } else {
        format!("{} ns", three_digits(ms * 1e6))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_prefixes_and_three_digits() {
        assert_eq!(si(3.8144e4, "FLOP"), "38.1 kFLOP");
        assert_eq!(si(5.32e9, "B"), "5.32 GB");
        assert_eq!(si(9.4432e6, "B"), "9.44 MB");
        assert_eq!(si(4.0963e6, "FLOP"), "4.10 MFLOP");
        assert_eq!(si(256.0, "B"), "256 B");
        assert_eq!(si(0.0, "FLOP"), "0 FLOP");
        assert_eq!(si(532.0, "FLOP"), "532 FLOP");
        assert_eq!(si(2.5, "B"), "2.50 B");
        assert_eq!(si(123_456.0, "B"), "123 kB");
        assert_eq!(si(999_960.0, "B"), "1.00 MB");
        assert_eq!(si(7.306e9, "B"), "7.31 GB");
        assert_eq!(si(1.2e19, "B"), "12.0 EB");
    }

    #[test]
    fn durations_pick_their_unit() {
        assert_eq!(duration_ms(2.634), "2.63 ms");
        assert_eq!(duration_ms(1534.0), "1.53 s");
        assert_eq!(duration_ms(123.4), "123 ms");
        assert_eq!(duration_ms(0.412), "412 µs");
        assert_eq!(duration_ms(0.0000123), "12.3 ns");
        assert_eq!(duration_ms(0.0), "0.00 ms");
        assert_eq!(duration_ms(999.99), "1.00 s");
    }
}
