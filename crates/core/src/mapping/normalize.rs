//! Number and date normalising: DAM spellings → what Akeneo accepts.
//!
//! Numbers: `"1 234,50 mm"`, `"€12.5"`, `"1.234.567"`, `1200.0` → a plain decimal string
//! (`"1234.5"`, `"12.5"`, `"1234567"`, `"1200"`), optionally rounded.
//!
//! Dates: RFC 3339, ISO 8601 without offset, EXIF (`2023:03:01 10:00:00`), RFC 2822, unix
//! seconds or milliseconds, or explicit `chrono` formats → Akeneo's `2023-03-01T00:00:00+00:00`.

use std::sync::OnceLock;

use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Timelike};
use serde_json::{Number, Value};

/// A JSON number as text, never in exponent form (`1e21` → `1000000000000000000000`).
pub(crate) fn number_text(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        Some(f) if f.is_finite() => format!("{f}"),
        _ => n.to_string(),
    }
}

fn is_group_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{a0}' | '\u{202f}' | '\u{2009}' | '\'' | '\u{2019}' | '_'
    )
}

/// Normalises a number written by a human or a DAM.
///
/// - Leading text and trailing units are ignored (`"€ 12"`, `"1200 px"`): the first number in
///   the text is used.
/// - Spaces, apostrophes and underscores inside the number are thousand separators.
/// - `decimal` is the decimal separator (`'.'` or `','`); the other one is a thousand separator.
///   With `None`: when both appear, the last one is the decimal separator; when only one kind
///   appears, once it is the decimal separator (`"12,5"` → `12.5`), several times it is a
///   thousand separator (`"1.234.567"` → `1234567`). `"1,234"` therefore reads as `1.234`: set
///   `decimal` when a DAM writes English thousands.
/// - `decimals`: rounds (half away from zero) to at most that many decimals.
///
/// The result has no leading zeros, no trailing fractional zeros and no exponent. `None` when
/// the text holds no number.
pub(crate) fn normalize_number(
    text: &str,
    decimal: Option<char>,
    decimals: Option<u32>,
) -> Option<String> {
    let trimmed = text.trim();
    // Exponent notation ("1.5E3") is read as a float, the one spelling with letters in it.
    if trimmed.bytes().any(|b| b == b'e' || b == b'E')
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'e' | b'E' | b'.' | b'-' | b'+'))
    {
        if let Ok(f) = trimmed.parse::<f64>() {
            if f.is_finite() {
                return normalize_number(&format!("{f}"), Some('.'), decimals);
            }
        }
    }
    let chars: Vec<char> = text.chars().collect();
    let first_digit = chars.iter().position(|c| c.is_ascii_digit())?;
    // A leading decimal separator (".5") and a sign belong to the number.
    let mut start = first_digit;
    if start > 0 && matches!(chars[start - 1], '.' | ',') {
        start -= 1;
    }
    let negative = start > 0 && matches!(chars[start - 1], '-' | '\u{2212}');
    let mut body = String::new();
    for &c in &chars[start..] {
        if c.is_ascii_digit() || c == '.' || c == ',' {
            body.push(c);
        } else if is_group_separator(c) {
            continue;
        } else {
            break;
        }
    }
    let body = body.trim_end_matches(['.', ',']);
    let dec = match decimal {
        Some(d) => d,
        None => {
            let (dots, commas) = (body.matches('.').count(), body.matches(',').count());
            match (dots, commas) {
                (0, 0) => '.',
                (_, 0) => {
                    if dots == 1 {
                        '.'
                    } else {
                        ','
                    }
                }
                (0, _) => {
                    if commas == 1 {
                        ','
                    } else {
                        '.'
                    }
                }
                _ => {
                    if body.rfind('.') > body.rfind(',') {
                        '.'
                    } else {
                        ','
                    }
                }
            }
        }
    };
    let group = if dec == '.' { ',' } else { '.' };
    let mut int = String::new();
    let mut frac = String::new();
    let mut seen_decimal = false;
    for c in body.chars() {
        if c == group {
            if seen_decimal {
                return None;
            }
        } else if c == dec {
            if seen_decimal {
                return None;
            }
            seen_decimal = true;
        } else if seen_decimal {
            frac.push(c);
        } else {
            int.push(c);
        }
    }
    if let Some(n) = decimals {
        let n = n as usize;
        if frac.len() > n {
            let round_up = frac.as_bytes()[n] >= b'5';
            frac.truncate(n);
            if round_up {
                let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
                let mut i = digits.len();
                loop {
                    if i == 0 {
                        digits.insert(0, b'1');
                        break;
                    }
                    i -= 1;
                    if digits[i] == b'9' {
                        digits[i] = b'0';
                    } else {
                        digits[i] += 1;
                        break;
                    }
                }
                let split = digits.len() - frac.len();
                frac = String::from_utf8_lossy(&digits[split..]).into_owned();
                int = String::from_utf8_lossy(&digits[..split]).into_owned();
            }
        }
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let mut out = String::with_capacity(int.len() + frac.len() + 3);
    let zero = int.is_empty() && frac.is_empty();
    if negative && !zero {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    Some(out)
}

/// How a normalised date is written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DateOutput {
    /// Akeneo's date: the calendar date (in the input's own offset) at midnight UTC,
    /// `2023-03-01T00:00:00+00:00`.
    Akeneo,
    /// The instant in UTC: `2023-03-01T09:00:00+00:00`.
    DateTime,
    /// `2023-03-01`.
    Date,
    /// A `chrono` format (parsed once) applied to the date-time in its own offset.
    Format(Vec<Item<'static>>),
}

impl DateOutput {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "akeneo" => Self::Akeneo,
            "datetime" => Self::DateTime,
            "date" => Self::Date,
            f => Self::Format(items(f)?),
        })
    }

    fn write(&self, dt: DateTime<FixedOffset>) -> String {
        let ymd = |d: NaiveDate| format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day());
        match self {
            Self::Akeneo => format!("{}T00:00:00+00:00", ymd(dt.date_naive())),
            Self::DateTime => {
                let u = dt.naive_utc();
                format!(
                    "{}T{:02}:{:02}:{:02}+00:00",
                    ymd(u.date()),
                    u.hour(),
                    u.minute(),
                    u.second()
                )
            }
            Self::Date => ymd(dt.date_naive()),
            Self::Format(items) => {
                use std::fmt::Write;
                let mut out = String::new();
                // Formatting can only fail on items the date cannot fill; then nothing is
                // written rather than panicking.
                if write!(out, "{}", dt.format_with_items(items.iter())).is_err() {
                    out.clear();
                }
                out
            }
        }
    }
}

/// Parses a `chrono` format once; fails on an unknown `%` specifier.
fn items(format: &str) -> Result<Vec<Item<'static>>, String> {
    if format.is_empty() {
        return Err("an empty date format".into());
    }
    StrftimeItems::new(format)
        .parse_to_owned()
        .map_err(|_| format!("`{format}` is not a valid chrono date format"))
}

/// One way of reading a date.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DateFormat {
    /// Every spelling [`parse_auto`] knows.
    Auto,
    Rfc3339,
    Rfc2822,
    UnixSeconds,
    UnixMillis,
    /// A `chrono` format (`%d/%m/%Y`, `%Y-%m-%d %H:%M:%S %z`, ...), parsed once.
    Pattern(Vec<Item<'static>>),
}

impl DateFormat {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => Self::Auto,
            "rfc3339" => Self::Rfc3339,
            "rfc2822" => Self::Rfc2822,
            "unix" => Self::UnixSeconds,
            "unix_ms" => Self::UnixMillis,
            f => Self::Pattern(items(f)?),
        })
    }
}

const UTC: FixedOffset = match FixedOffset::east_opt(0) {
    Some(o) => o,
    None => unreachable!(),
};

fn from_unix(secs: i64, nanos: u32) -> Option<DateTime<FixedOffset>> {
    DateTime::from_timestamp(secs, nanos).map(|d| d.fixed_offset())
}

/// Unix time: seconds, or milliseconds when the magnitude says so (≥ 1e11, i.e. after 1973 in
/// milliseconds, after year 5138 in seconds).
fn unix_auto(n: f64) -> Option<DateTime<FixedOffset>> {
    if !n.is_finite() {
        return None;
    }
    let secs = if n.abs() >= 1e11 { n / 1000.0 } else { n };
    if secs.abs() > 1e13 {
        return None;
    }
    let whole = secs.floor();
    let nanos = ((secs - whole) * 1e9).round().clamp(0.0, 999_999_999.0) as u32;
    from_unix(whole as i64, nanos)
}

/// Reads `s` with pre-parsed items, as `DateTime::parse_from_str` would, else as
/// `NaiveDateTime::parse_from_str` (taken as UTC), else as `NaiveDate::parse_from_str`
/// (midnight UTC).
fn with_items(s: &str, items: &[Item<'static>]) -> Option<DateTime<FixedOffset>> {
    let mut p = Parsed::new();
    chrono::format::parse(&mut p, s, items.iter()).ok()?;
    if let Ok(d) = p.to_datetime() {
        return Some(d);
    }
    if let Ok(d) = p.to_naive_datetime_with_offset(0) {
        return Some(UTC.from_utc_datetime(&d));
    }
    p.to_naive_date()
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| UTC.from_utc_datetime(&d))
}

/// The spellings `auto` tries after RFC 3339, each with the byte its inputs have at index 4
/// (`-` for ISO, `:` for EXIF, ...), so only the plausible ones are tried.
const AUTO_PATTERNS: &[(u8, &str)] = &[
    (b'-', "%Y-%m-%dT%H:%M:%S%.f%z"),
    (b'-', "%Y-%m-%dT%H:%M%z"),
    (b'-', "%Y-%m-%dT%H:%M:%S%.f"),
    (b'-', "%Y-%m-%dT%H:%M"),
    (b'-', "%Y-%m-%d %H:%M:%S%.f"),
    (b'-', "%Y-%m-%d %H:%M"),
    (b'-', "%Y-%m-%d"),
    (b':', "%Y:%m:%d %H:%M:%S%.f%:z"),
    (b':', "%Y:%m:%d %H:%M:%S%.f"),
    (b'0', "%Y%m%dT%H%M%SZ"),
    (b'0', "%Y%m%d"),
    (b'/', "%Y/%m/%d"),
];

fn auto_items() -> &'static [(u8, Vec<Item<'static>>)] {
    static ITEMS: OnceLock<Vec<(u8, Vec<Item<'static>>)>> = OnceLock::new();
    ITEMS.get_or_init(|| {
        AUTO_PATTERNS
            .iter()
            .filter_map(|(b, f)| items(f).ok().map(|i| (*b, i)))
            .collect()
    })
}

/// Reads the date spellings DAMs use (see the module docs). Naive date-times are taken as UTC.
pub(crate) fn parse_auto(s: &str) -> Option<DateTime<FixedOffset>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let b = s.as_bytes();
    let all_digits = b.iter().all(u8::is_ascii_digit);
    if all_digits && s.len() >= 9 {
        return s.parse::<f64>().ok().and_then(unix_auto);
    }
    if b.len() >= 8 && b[..4].iter().all(u8::is_ascii_digit) {
        let sep = if b[4].is_ascii_digit() { b'0' } else { b[4] };
        if sep == b'-' {
            if let Ok(d) = DateTime::parse_from_rfc3339(s) {
                return Some(d);
            }
        }
        return auto_items()
            .iter()
            .filter(|(k, _)| *k == sep)
            .find_map(|(_, items)| with_items(s, items));
    }
    DateTime::parse_from_rfc2822(s).ok()
}

/// Reads `v` (a string, or a number taken as unix time) with the first format that fits and
/// writes it as `output` says. `None` when no format fits.
pub(crate) fn normalize_date(
    v: &Value,
    formats: &[DateFormat],
    output: &DateOutput,
) -> Option<String> {
    let auto = [DateFormat::Auto];
    let formats = if formats.is_empty() {
        &auto[..]
    } else {
        formats
    };
    let dt = formats.iter().find_map(|f| match (f, v) {
        (DateFormat::Auto, Value::String(s)) => parse_auto(s),
        (DateFormat::Auto | DateFormat::UnixSeconds | DateFormat::UnixMillis, Value::Number(n)) => {
            let x = n.as_f64()?;
            match f {
                DateFormat::UnixSeconds => unix_auto(x).filter(|_| x.abs() < 1e11),
                DateFormat::UnixMillis => unix_auto(x / 1000.0),
                _ => unix_auto(x),
            }
        }
        (DateFormat::Rfc3339, Value::String(s)) => DateTime::parse_from_rfc3339(s.trim()).ok(),
        (DateFormat::Rfc2822, Value::String(s)) => DateTime::parse_from_rfc2822(s.trim()).ok(),
        (DateFormat::UnixSeconds, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.abs() < 1e11)
            .and_then(unix_auto),
        (DateFormat::UnixMillis, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|x| unix_auto(x / 1000.0)),
        (DateFormat::Pattern(items), Value::String(s)) => with_items(s.trim(), items),
        _ => None,
    })?;
    // Years outside 1–9999 are misread values (a huge timestamp), not dates a PIM takes.
    if !(1..=9999).contains(&dt.year()) {
        return None;
    }
    Some(output.write(dt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn n(s: &str) -> Option<String> {
        normalize_number(s, None, None)
    }

    #[test]
    fn numbers() {
        for (input, want) in [
            ("1200", Some("1200")),
            ("1200 px", Some("1200")),
            ("12,5", Some("12.5")),
            ("12.50", Some("12.5")),
            ("1 234,50 mm", Some("1234.5")),
            ("1\u{a0}234,5", Some("1234.5")),
            ("1.234.567", Some("1234567")),
            ("1,234,567.89", Some("1234567.89")),
            ("1.234.567,89", Some("1234567.89")),
            ("1'234.5", Some("1234.5")),
            ("€ 12.5", Some("12.5")),
            ("-3,25 °C", Some("-3.25")),
            ("\u{2212}4", Some("-4")),
            (".5", Some("0.5")),
            ("007", Some("7")),
            ("0.000", Some("0")),
            ("-0", Some("0")),
            ("1.5E3", Some("1500")),
            ("1e21", Some("1000000000000000000000")),
            ("width: 300", Some("300")),
            ("n/a", None),
            ("", None),
            ("1.2.3,4,5", None),
        ] {
            assert_eq!(n(input).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn explicit_separator_and_rounding() {
        assert_eq!(
            normalize_number("1,234", Some('.'), None).as_deref(),
            Some("1234")
        );
        assert_eq!(
            normalize_number("1.234", Some(','), None).as_deref(),
            Some("1234")
        );
        assert_eq!(
            normalize_number("12.5", None, Some(0)).as_deref(),
            Some("13")
        );
        assert_eq!(
            normalize_number("-12.5", None, Some(0)).as_deref(),
            Some("-13")
        );
        assert_eq!(
            normalize_number("12.44", None, Some(1)).as_deref(),
            Some("12.4")
        );
        assert_eq!(
            normalize_number("99.96", None, Some(1)).as_deref(),
            Some("100")
        );
        assert_eq!(normalize_number("0.4", None, Some(0)).as_deref(), Some("0"));
        assert_eq!(
            normalize_number("-0.4", None, Some(0)).as_deref(),
            Some("0")
        );
        assert_eq!(normalize_number("1,5,6", Some(','), None), None);
    }

    #[test]
    fn json_numbers_as_text() {
        assert_eq!(number_text(&serde_json::Number::from(12)), "12");
        assert_eq!(
            number_text(&serde_json::Number::from_f64(1e21).unwrap()),
            "1000000000000000000000"
        );
        assert_eq!(
            number_text(&serde_json::Number::from_f64(0.1).unwrap()),
            "0.1"
        );
    }

    fn d(v: Value) -> Option<String> {
        normalize_date(&v, &[], &DateOutput::Akeneo)
    }

    #[test]
    fn dates_auto() {
        let want = Some("2023-03-01T00:00:00+00:00".to_string());
        for input in [
            json!("2023-03-01T10:00:00Z"),
            json!("2023-03-01T10:00:00.123+02:00"),
            json!("2023-03-01T23:30:00-05:00"),
            json!("2023-03-01T10:00:00"),
            json!("2023-03-01T10:00"),
            json!("2023-03-01 10:00:00"),
            json!("2023-03-01"),
            json!("2023:03:01 10:00:00"),
            json!("20230301"),
            json!("2023/03/01"),
            json!("2023-3-1"),
            json!("Wed, 01 Mar 2023 10:00:00 +0000"),
            json!(1_677_664_800),
            json!(1_677_664_800_000_u64),
            json!("1677664800"),
            json!(1_677_664_800.5),
        ] {
            assert_eq!(d(input.clone()), want, "{input}");
        }
        assert_eq!(d(json!("yesterday")), None);
        assert_eq!(d(json!("")), None);
        assert_eq!(d(json!(true)), None);
        assert_eq!(d(json!(1e300)), None);
        assert_eq!(d(json!(-1e300)), None);
        assert_eq!(d(json!(5e15)), None, "milliseconds: year 160000");
        assert_eq!(d(json!("99999-01-01")), None);
    }

    #[test]
    fn dates_explicit_and_outputs() {
        let fr = [DateFormat::parse("%d/%m/%Y").unwrap()];
        assert_eq!(
            normalize_date(&json!("01/03/2023"), &fr, &DateOutput::Akeneo).as_deref(),
            Some("2023-03-01T00:00:00+00:00")
        );
        // Only the given formats are tried.
        assert_eq!(
            normalize_date(&json!("2023-03-01"), &fr, &DateOutput::Akeneo),
            None
        );
        let v = json!("2023-03-01T01:30:00+02:00");
        assert_eq!(
            normalize_date(&v, &[], &DateOutput::DateTime).as_deref(),
            Some("2023-02-28T23:30:00+00:00")
        );
        assert_eq!(
            normalize_date(&v, &[], &DateOutput::Akeneo).as_deref(),
            Some("2023-03-01T00:00:00+00:00")
        );
        assert_eq!(
            normalize_date(&v, &[], &DateOutput::Date).as_deref(),
            Some("2023-03-01")
        );
        assert_eq!(
            normalize_date(&v, &[], &DateOutput::parse("%d.%m.%Y").unwrap()).as_deref(),
            Some("01.03.2023")
        );
        let ms = [DateFormat::UnixMillis];
        assert_eq!(
            normalize_date(&json!(0), &ms, &DateOutput::DateTime).as_deref(),
            Some("1970-01-01T00:00:00+00:00")
        );
        assert!(DateFormat::parse("%Q").is_err());
        assert!(DateOutput::parse("%").is_err());
    }
}
