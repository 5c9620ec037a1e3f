//! `.env` and `env_file` files as docker compose reads them: `KEY=VALUE` lines, optional
//! `export `, `#` comments, single quotes (literal), double quotes (escapes, may span lines,
//! interpolated), unquoted values (trimmed, ` #` starts a comment, interpolated), and a bare
//! `KEY` that takes its value from the environment (dropped when unset).

use crate::interpolate::{InterpolateError, interpolate};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DotenvError {
    #[error("line {line}: {text:?} is not KEY=VALUE")]
    Line { line: usize, text: String },
    #[error("line {line}: the quoted value never ends")]
    Unterminated { line: usize },
    #[error(
        "line {line}: the value of {key} is longer than {MAX_VALUE} bytes, the most one environment variable can hold (execve's MAX_ARG_STRLEN)"
    )]
    ValueTooLong { line: usize, key: String },
    #[error("line {line}: the values add up to more than {MAX_TOTAL} bytes, more than a process's environment can hold (execve's ARG_MAX)")]
    TooLarge { line: usize },
    #[error("line {line}")]
    Interpolate {
        line: usize,
        #[source]
        source: InterpolateError,
    },
}

/// The longest value a variable may have: execve(2)'s limit on one environment string
/// (`MAX_ARG_STRLEN`, 32 pages), which a longer one could not be passed in anyway. Checked on
/// each value stored, so lines that refer to earlier ones (`A=$A$A`, again and again) cannot
/// grow a value exponentially.
pub const MAX_VALUE: usize = 32 * 4096;
/// The most all the values together may hold: `ARG_MAX` as Linux sets it by default (a quarter
/// of the 8 MiB stack limit).
pub const MAX_TOTAL: usize = 2 * 1024 * 1024;

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) && !k.starts_with(|c: char| c.is_ascii_digit())
}

/// Parses `text`; `lookup` gives the environment for bare keys and interpolation (keys defined
/// earlier in the file take precedence over it).
pub fn parse(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<(String, String)>, DotenvError> {
    let mut out: Vec<(String, String)> = Vec::new();
    // The bytes of `out` as an environment holds them (`KEY=VALUE\0`).
    let mut total = 0usize;
    let set = |out: &mut Vec<(String, String)>, total: &mut usize, key: &str, value: String| {
        if let Some(old) = out.iter().position(|(e, _)| e == key) {
            let (k, v) = out.remove(old);
            *total -= k.len() + v.len() + 2;
        }
        *total += key.len() + value.len() + 2;
        out.push((key.to_owned(), value));
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let raw = lines[i].trim();
        i += 1;
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let l = raw.strip_prefix("export ").map_or(raw, str::trim_start);
        let Some((k, v)) = l.split_once('=') else {
            if valid_key(l) {
                if let Some(v) = lookup(l) {
                    set(&mut out, &mut total, l, v);
                }
                continue;
            }
            return Err(DotenvError::Line { line: line_no, text: raw.to_owned() });
        };
        let key = k.trim();
        if !valid_key(key) {
            return Err(DotenvError::Line { line: line_no, text: raw.to_owned() });
        }
        let v = v.trim_start();
        let known = |name: &str| out.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone()).or_else(|| lookup(name));
        // One expansion is bounded by `interpolate` (MAX_OUTPUT); a stored value, by MAX_VALUE below.
        let interp = |s: &str| interpolate(s, &known).map(|r| r.value).map_err(|source| DotenvError::Interpolate { line: line_no, source });
        let value = if let Some(rest) = v.strip_prefix('\'') {
            let mut body = rest.to_owned();
            while !body.contains('\'') {
                let next = lines.get(i).ok_or(DotenvError::Unterminated { line: line_no })?;
                body.push('\n');
                body.push_str(next);
                i += 1;
            }
            body[..body.find('\'').expect("checked")].to_owned()
        } else if let Some(rest) = v.strip_prefix('"') {
            let mut body = rest.to_owned();
            let end = loop {
                if let Some(e) = closing_quote(&body) {
                    break e;
                }
                let next = lines.get(i).ok_or(DotenvError::Unterminated { line: line_no })?;
                body.push('\n');
                body.push_str(next);
                i += 1;
            };
            interp(&unescape(&body[..end]))?
        } else {
            let v = match v.find(" #") {
                Some(c) => &v[..c],
                None if v.starts_with('#') => "",
                None => v,
            };
            interp(v.trim_end())?
        };
        if value.len() > MAX_VALUE {
            return Err(DotenvError::ValueTooLong { line: line_no, key: key.to_owned() });
        }
        set(&mut out, &mut total, key, value);
        if total > MAX_TOTAL {
            return Err(DotenvError::TooLarge { line: line_no });
        }
    }
    Ok(out)
}

fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(c @ ('"' | '\\' | '$')) => out.push(c),
            Some(c) => {
                out.push('\\');
                out.push(c);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Vec<(String, String)> {
        parse(text, &|k| (k == "HOME").then(|| "/root".to_owned())).unwrap()
    }

    #[test]
    fn the_forms_real_env_files_use() {
        let text = "# c\nA=1\nexport B = two words  # note\nC='lit $A'\nD=\"x\\ny ${A}\"\nE=${HOME}/cfg\nHOME\nMISSING\nF=\nG=a#b\nH=\"multi\nline\"\n";
        let want: Vec<(String, String)> = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "lit $A"),
            ("D", "x\ny 1"),
            ("E", "/root/cfg"),
            ("HOME", "/root"),
            ("F", ""),
            ("G", "a#b"),
            ("H", "multi\nline"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(p(text), want);
    }

    /// Regression (found by the `api_bodies` fuzzer, out of memory): each line doubling the
    /// one before (`S=$S$S`) grew a 3 KB file's value past 2 GB.
    #[test]
    fn values_that_refer_to_earlier_ones_cannot_grow_without_bound() {
        let doubling = format!("S=x\n{}", "S=$S$S\n".repeat(40));
        let err = parse(&doubling, &|_| None).unwrap_err();
        assert!(matches!(err, DotenvError::ValueTooLong { line: 19, ref key } if key == "S"), "{err}");
        assert!(err.to_string().contains("longer than 131072 bytes"), "{err}");
        let braced = format!("S=x\n{}", "S=\"${S}${S:-y}\"\n".repeat(40));
        assert!(matches!(parse(&braced, &|_| None), Err(DotenvError::ValueTooLong { .. })));
        let big = "y".repeat(MAX_VALUE);
        assert_eq!(parse(&format!("S='{big}'\n"), &|_| None).unwrap()[0].1.len(), MAX_VALUE, "the limit itself is allowed");
        let many: String = (0..20).map(|i| format!("K{i}='{big}'\n")).collect();
        assert!(matches!(parse(&many, &|_| None), Err(DotenvError::TooLarge { line: 16 })));
    }

    #[test]
    fn bad_lines_name_their_number() {
        assert_eq!(parse("A=1\nnot a pair\n", &|_| None), Err(DotenvError::Line { line: 2, text: "not a pair".into() }));
        assert_eq!(parse("A=\"open\n", &|_| None), Err(DotenvError::Unterminated { line: 1 }));
    }
}
