//! The names a certificate may be asked for: DNS names (RFC 1123 labels), a wildcard only as
//! the whole first label, and the DNS-01 record name that proves each. Pure.

/// Why a name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("no names given: a certificate needs at least one")]
    Empty,
    #[error("{name:?} is not a DNS name for a certificate: {reason}")]
    Invalid { name: String, reason: &'static str },
}

fn check_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("it has an empty label");
    }
    if label.len() > 63 {
        return Err("a label is longer than 63 characters");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("a label starts or ends with '-'");
    }
    if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err("only letters, digits, '-' and '.' are allowed (and '*.' at the start)");
    }
    Ok(())
}

/// Lowercases, drops a final dot and checks one name: `*.example.org` allowed, `a.*.org` and
/// `*example.org` not, at least two labels.
pub fn normalize_name(name: &str) -> Result<String, NameError> {
    let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let invalid = |reason| NameError::Invalid { name: name.to_owned(), reason };
    if n.len() > 253 {
        return Err(invalid("it is longer than 253 characters"));
    }
    let base = n.strip_prefix("*.").unwrap_or(&n);
    if base.split('.').count() < 2 {
        return Err(invalid("it needs at least two labels (a name under a domain)"));
    }
    for label in base.split('.') {
        check_label(label).map_err(invalid)?;
    }
    Ok(n)
}

/// Normalises every name ([`normalize_name`]) and drops duplicates, keeping the first order.
pub fn normalize_names<S: AsRef<str>>(names: &[S]) -> Result<Vec<String>, NameError> {
    if names.is_empty() {
        return Err(NameError::Empty);
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        let n = normalize_name(n.as_ref())?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// The TXT record that proves `name` by DNS-01: `_acme-challenge.<name>` without the wildcard
/// label (so `*.example.org` and `example.org` share one record name, with two values).
pub fn challenge_record(name: &str) -> String {
    format!("_acme-challenge.{}", name.strip_prefix("*.").unwrap_or(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_deduplicated_and_checked() {
        assert_eq!(normalize_names(&["*.Friends.test.", "friends.test", "FRIENDS.TEST"]).unwrap(), vec!["*.friends.test", "friends.test"]);
        assert_eq!(normalize_names::<&str>(&[]), Err(NameError::Empty));
        for (bad, why) in [
            ("a.*.test", "only letters"),
            ("*friends.test", "only letters"),
            ("*.*.friends.test", "only letters"),
            ("test", "two labels"),
            ("*.test", "two labels"),
            ("a..test", "empty label"),
            ("-a.test", "starts or ends"),
            ("a_b.test", "only letters"),
            ("é.test", "only letters"),
        ] {
            let err = normalize_name(bad).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
        assert!(normalize_name(&format!("{}.test", "a".repeat(64))).is_err());
    }

    #[test]
    fn wildcard_and_apex_share_one_challenge_record() {
        assert_eq!(challenge_record("*.friends.test"), "_acme-challenge.friends.test");
        assert_eq!(challenge_record("friends.test"), "_acme-challenge.friends.test");
        assert_eq!(challenge_record("mail.friends.test"), "_acme-challenge.mail.friends.test");
    }
}
