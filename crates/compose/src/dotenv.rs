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
    #[error("line {line}")]
    Interpolate {
        line: usize,
        #[source]
        source: InterpolateError,
    },
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) && !k.starts_with(|c: char| c.is_ascii_digit())
}

/// Parses `text`; `lookup` gives the environment for bare keys and interpolation (keys defined
/// earlier in the file take precedence over it).
pub fn parse(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<(String, String)>, DotenvError> {
    let mut out: Vec<(String, String)> = Vec::new();
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
                    out.retain(|(e, _)| e != l);
                    out.push((l.to_owned(), v));
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
        out.retain(|(e, _)| e != key);
        out.push((key.to_owned(), value));
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

    #[test]
    fn bad_lines_name_their_number() {
        assert_eq!(parse("A=1\nnot a pair\n", &|_| None), Err(DotenvError::Line { line: 2, text: "not a pair".into() }));
        assert_eq!(parse("A=\"open\n", &|_| None), Err(DotenvError::Unterminated { line: 1 }));
    }
}
