//! Variable interpolation as the Compose Specification defines it, for compose files and
//! `.env` files: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
//! `${VAR?error}`, `${VAR:+replacement}`, `${VAR+replacement}`, and `$$` for a literal `$`.
//! Defaults, replacements and messages are interpolated in turn, so `${A:-${B:-x}}` works.
//! Pure: the caller passes the lookup.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    #[error("required variable {var} is missing a value: {message}")]
    Required { var: String, message: String },
    #[error("invalid interpolation format in {text:?}: {why}")]
    Syntax { text: String, why: &'static str },
    #[error("the value expands to more than {MAX_OUTPUT} bytes (a variable used over and over?)")]
    TooLong,
}

/// The longest string one interpolation may produce: a compose value or `.env` line that
/// refers to a long variable many times (`$S$S$S…`) is refused before it fills the memory.
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// The result, and the variables that were used without a value (docker compose warns
/// about them and substitutes the empty string).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interpolated {
    pub value: String,
    pub unset: Vec<String>,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The index just past the `}` matching the `${` whose body starts at `start`.
fn closing(s: &str, start: usize) -> Option<usize> {
    let b = s.as_bytes();
    let (mut depth, mut i) = (1usize, start);
    while i < b.len() {
        match b[i] {
            b'$' if b.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if b.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Interpolates `s`, looking variables up with `lookup`.
pub fn interpolate(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Interpolated, InterpolateError> {
    let mut out = Interpolated::default();
    expand(s, lookup, &mut out)?;
    Ok(out)
}

fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>, out: &mut Interpolated) -> Result<(), InterpolateError> {
    let syntax = |why| InterpolateError::Syntax { text: s.to_owned(), why };
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        // Each step adds one character or one variable's value (a nested word checks its own).
        if out.value.len() > MAX_OUTPUT {
            return Err(InterpolateError::TooLong);
        }
        if c != '$' {
            out.value.push(c);
            continue;
        }
        match chars.peek().map(|&(_, c)| c) {
            Some('$') => {
                chars.next();
                out.value.push('$');
            }
            Some('{') => {
                let body_start = i + 2;
                let end = closing(s, body_start).ok_or_else(|| syntax("a ${ without its }"))?;
                braced(&s[body_start..end], lookup, out).map_err(|e| match e {
                    InterpolateError::Syntax { why, .. } => syntax(why),
                    e => e,
                })?;
                while chars.peek().is_some_and(|&(j, _)| j <= end) {
                    chars.next();
                }
            }
            Some(c) if is_name_start(c) => {
                let mut name = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if !is_name_char(c) {
                        break;
                    }
                    name.push(c);
                    chars.next();
                }
                match lookup(&name) {
                    Some(v) => out.value.push_str(&v),
                    None => out.unset.push(name),
                }
            }
            // A `$` not followed by a name is kept, as compose does.
            _ => out.value.push('$'),
        }
    }
    if out.value.len() > MAX_OUTPUT {
        return Err(InterpolateError::TooLong);
    }
    Ok(())
}

/// The inside of `${…}`.
fn braced(body: &str, lookup: &dyn Fn(&str) -> Option<String>, out: &mut Interpolated) -> Result<(), InterpolateError> {
    let name_len = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
    let (name, rest) = body.split_at(name_len);
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err(InterpolateError::Syntax { text: body.to_owned(), why: "a variable name must start with a letter or _" });
    }
    let value = lookup(name);
    let set = value.is_some();
    let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let word = |w: &str, out: &mut Interpolated| expand(w, lookup, out);
    let (op, word_text) = match rest {
        "" => ("", ""),
        r if r.starts_with(":-") || r.starts_with(":?") || r.starts_with(":+") => r.split_at(2),
        r if r.starts_with('-') || r.starts_with('?') || r.starts_with('+') => r.split_at(1),
        _ => {
            return Err(InterpolateError::Syntax {
                text: body.to_owned(),
                why: "use ${VAR}, ${VAR:-default}, ${VAR:?error} or ${VAR:+other}",
            });
        }
    };
    match op {
        "" => match value {
            Some(v) => out.value.push_str(&v),
            None => out.unset.push(name.to_owned()),
        },
        ":-" if !non_empty => word(word_text, out)?,
        "-" if !set => word(word_text, out)?,
        ":-" | "-" => out.value.push_str(&value.unwrap_or_default()),
        ":?" | "?" if (op == ":?" && !non_empty) || (op == "?" && !set) => {
            let mut msg = Interpolated::default();
            expand(word_text, lookup, &mut msg)?;
            return Err(InterpolateError::Required { var: name.to_owned(), message: msg.value });
        }
        ":?" | "?" => out.value.push_str(&value.unwrap_or_default()),
        ":+" if non_empty => word(word_text, out)?,
        "+" if set => word(word_text, out)?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A sibling of the `.env` regression in `dotenv`: one string that uses a long variable
    /// over and over is refused, not expanded into gigabytes.
    #[test]
    fn a_value_that_expands_past_the_limit_is_refused() {
        let long = "x".repeat(128 * 1024);
        let lookup = |k: &str| (k == "S").then(|| long.clone());
        assert_eq!(interpolate(&"$S".repeat(1000), &lookup), Err(InterpolateError::TooLong));
        assert_eq!(interpolate(&"${S:-}".repeat(1000), &lookup), Err(InterpolateError::TooLong));
        assert_eq!(interpolate("${U:-$S$S$S$S$S$S$S$S$S}", &lookup), Err(InterpolateError::TooLong));
        assert_eq!(interpolate(&"$S".repeat(8), &lookup).unwrap().value.len(), MAX_OUTPUT, "the limit itself is allowed");
    }

    fn env() -> HashMap<&'static str, &'static str> {
        [("A", "alpha"), ("EMPTY", ""), ("PORT", "8080")].into_iter().collect()
    }

    fn run(s: &str) -> Result<String, InterpolateError> {
        let e = env();
        interpolate(s, &|k| e.get(k).map(|v| v.to_string())).map(|r| r.value)
    }

    #[test]
    fn forms() {
        let cases = [
            ("plain", "plain"),
            ("$A-$PORT", "alpha-8080"),
            ("${A}x", "alphax"),
            ("${UNSET:-d}", "d"),
            ("${EMPTY:-d}", "d"),
            ("${EMPTY-d}", ""),
            ("${UNSET-d}", "d"),
            ("${A:-d}", "alpha"),
            ("${A:+yes}", "yes"),
            ("${EMPTY:+yes}", ""),
            ("${EMPTY+yes}", "yes"),
            ("${UNSET+yes}", ""),
            ("$$A costs $$5", "$A costs $5"),
            ("${UNSET:-${A:-x}}", "alpha"),
            ("${UNSET:-${NOPE:-deep}}", "deep"),
            ("a $ b $1", "a $ b $1"),
            ("${UNSET}", ""),
            ("${UNSET:-with spaces and : colons}", "with spaces and : colons"),
        ];
        for (input, want) in cases {
            assert_eq!(run(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            run("${UNSET:?set it in .env}"),
            Err(InterpolateError::Required { var: "UNSET".into(), message: "set it in .env".into() })
        );
        assert!(matches!(run("${EMPTY:?x}"), Err(InterpolateError::Required { .. })));
        assert_eq!(run("${EMPTY?x}"), Ok(String::new()));
        assert!(matches!(run("${A"), Err(InterpolateError::Syntax { .. })));
        assert!(matches!(run("${}"), Err(InterpolateError::Syntax { .. })));
        assert!(matches!(run("${A*b}"), Err(InterpolateError::Syntax { .. })));
        assert!(matches!(run("${1A}"), Err(InterpolateError::Syntax { .. })));
    }

    #[test]
    fn unset_variables_are_reported() {
        let r = interpolate("$X ${Y} ${Z:-z} $A", &|k| (k == "A").then(|| "a".to_owned())).unwrap();
        assert_eq!(r.value, "  z a");
        assert_eq!(r.unset, ["X", "Y"]);
    }

    fn escape(s: &str) -> String {
        s.replace('$', "$$")
    }

    proptest! {
        /// Text without `$` passes through unchanged.
        #[test]
        fn no_dollar_is_identity(s in "[^$]{0,40}") {
            prop_assert_eq!(run(&s).unwrap(), s);
        }

        /// Escaping every `$` yields the original text back, whatever it holds.
        #[test]
        fn escaped_text_round_trips(s in "\\PC{0,40}") {
            prop_assert_eq!(run(&escape(&s)).unwrap(), s);
        }

        /// `${V:-d}` is the value when set and non-empty, else the default.
        #[test]
        fn default_semantics(v in proptest::option::of("[a-z]{0,5}"), d in "[a-z ]{0,8}") {
            let r = interpolate("${V:-D}".replace('D', &d).as_str(), &|k| if k == "V" { v.clone() } else { None }).unwrap();
            let want = match &v { Some(x) if !x.is_empty() => x.clone(), _ => d.clone() };
            prop_assert_eq!(r.value, want);
        }

        /// Never panics, whatever the input.
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = run(&s);
        }
    }
}
