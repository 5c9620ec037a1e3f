//! How plain scalars are typed, and how numbers read back as text, exactly as docker compose
//! does: compose-go decodes with go-yaml v3, whose resolver is the YAML 1.2 core schema plus
//! Go's integer syntax (`0777` and `0o777` are octal, `0b101` binary, `1_000` is 1000) and a
//! float form that takes `08` and `1e3`; a number later used as text (`environment: {A: 1e6}`)
//! is printed by Go's `%v` (`1e+06`).

use super::Value;

/// Types a plain scalar as go-yaml v3 does for an untyped target.
pub fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        "-0" | "-0.0" => return Value::Float(-0.0),
        _ => {}
    }
    match s.as_bytes()[0] {
        b'.' if float_syntax(s) => return s.parse().map_or_else(|_| Value::Str(s.into()), Value::Float),
        b'0'..=b'9' | b'+' | b'-' => {
            let plain = s.replace('_', "");
            if let Some(i) = go_int(&plain) {
                return Value::Int(i);
            }
            if float_syntax(&plain)
                && let Ok(f) = plain.parse::<f64>()
            {
                return Value::Float(f);
            }
        }
        _ => {}
    }
    Value::Str(s.into())
}

/// Go's `strconv.ParseInt(s, 0, 64)`: a sign, then `0x`/`0o`/`0b` or a leading `0` (octal) or
/// decimal digits.
fn go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) = match lower.as_deref() {
        Some("0x") => (16, &body[2..]),
        Some("0o") => (8, &body[2..]),
        Some("0b") => (2, &body[2..]),
        _ if body.len() > 1 && body.starts_with('0') => (8, &body[1..]),
        _ => (10, body),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if neg { 0i64.checked_sub_unsigned(magnitude) } else { i64::try_from(magnitude).ok() }
}

/// go-yaml's float form: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn float_syntax(s: &str) -> bool {
    let b = s.strip_prefix(['-', '+']).unwrap_or(s).as_bytes();
    let digits = |b: &[u8], from: usize| from + b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = digits(b, 0);
    let int_digits = i;
    if b.get(i) == Some(&b'.') {
        let j = digits(b, i + 1);
        if int_digits == 0 && j == i + 1 {
            return false;
        }
        i = j;
    } else if int_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'-' | b'+')) {
            j += 1;
        }
        let k = digits(b, j);
        if k == j {
            return false;
        }
        i = k;
    }
    i == b.len()
}

/// A float as Go's `fmt.Sprint` prints it (what compose-go does with a number used as text):
/// the shortest digits that read back the same, in `%e` form when the decimal exponent is
/// below -4 or at least 6 (`1e+06`, `123456`, `1e-05`).
pub fn float_text(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // Rust's `{:e}` gives the shortest round-tripping digits: `1.2345e6`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if !(-4..6).contains(&exp) {
        let frac = &digits[1..];
        let dot = if frac.is_empty() { String::new() } else { format!(".{frac}") };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{}{dot}e{esign}{:02}", &digits[..1], exp.abs());
    }
    if exp < 0 {
        return format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize));
    }
    let point = exp as usize + 1;
    if digits.len() <= point {
        format!("{sign}{digits}{}", "0".repeat(point - digits.len()))
    } else {
        format!("{sign}{}.{}", &digits[..point], &digits[point..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_are_typed_as_go_yaml_types_them() {
        use Value::*;
        let cases: &[(&str, Value)] = &[
            ("1", Int(1)),
            ("+5", Int(5)),
            ("-5", Int(-5)),
            ("0777", Int(0o777)),
            ("0o17", Int(15)),
            ("0x1F", Int(31)),
            ("0b101", Int(5)),
            ("1_000", Int(1000)),
            ("08", Float(8.0)),
            ("1e3", Float(1000.0)),
            ("1.5", Float(1.5)),
            (".5", Float(0.5)),
            ("5.", Float(5.0)),
            ("-0", Float(-0.0)),
            ("9223372036854775807", Int(i64::MAX)),
            ("-9223372036854775808", Int(i64::MIN)),
            ("true", Bool(true)),
            ("False", Bool(false)),
            ("~", Null),
            ("", Null),
            ("yes", Str("yes".into())),
            ("on", Str("on".into())),
            ("08:00", Str("08:00".into())),
            ("2001-12-14", Str("2001-12-14".into())),
            ("1.2.3", Str("1.2.3".into())),
            ("0x", Str("0x".into())),
            ("1e", Str("1e".into())),
            ("-", Str("-".into())),
            (".", Str(".".into())),
            ("_1", Str("_1".into())),
            ("inf", Str("inf".into())),
            ("nan", Str("nan".into())),
            ("80:80", Str("80:80".into())),
        ];
        for (text, want) in cases {
            let got = resolve_plain(text);
            match (want, &got) {
                (Float(w), Float(g)) => assert!(w.to_bits() == g.to_bits(), "{text}: {got:?}"),
                _ => assert_eq!(&got, want, "{text}"),
            }
        }
    }

    #[test]
    fn floats_print_as_go_prints_them() {
        for (f, want) in [
            (1.5, "1.5"),
            (1000.0, "1000"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-7, "-2.5e-07"),
            (1e21, "1e+21"),
            (100000.0, "100000"),
            (0.1, "0.1"),
            (-0.0, "-0"),
        ] {
            assert_eq!(float_text(f), want, "{f}");
        }
    }
}
