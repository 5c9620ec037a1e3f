//! Printing: aligned tables, relative times, error chains.

use std::fmt::Write as _;

/// `message: cause: cause`, the whole chain on one line.
pub fn chain(e: &anyhow::Error) -> String {
    let mut s = String::new();
    for (i, c) in e.chain().enumerate() {
        if i > 0 {
            s.push_str(": ");
        }
        let _ = write!(s, "{c}");
    }
    s
}

/// Renders rows under headers, columns padded to their widest cell, like docker's tables.
/// `GET url`'s list printed as JSON (`--json`) or as a table of `headers` with a row per item.
pub async fn listing<T: serde::de::DeserializeOwned + serde::Serialize>(
    client: &atoll_api::client::Client,
    url: &str,
    json: bool,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    let list: Vec<T> = client.json(hyper::Method::GET, url, None::<&()>).await?;
    if json {
        print_json(&list)
    } else {
        print!("{}", table(headers, &list.iter().map(row).collect::<Vec<_>>()));
        Ok(())
    }
}

/// `v` as indented JSON on standard output (`--json`).
pub fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}   ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// "3 minutes ago", "2 days ago", from an RFC 3339 time.
pub fn ago(rfc3339: Option<&str>, now: time::OffsetDateTime) -> String {
    let Some(t) = rfc3339.and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()) else {
        return "N/A".into();
    };
    let secs = (now - t).whole_seconds();
    if secs < 0 {
        return "in the future".into();
    }
    let (n, unit) = match secs {
        0..=59 => (secs, "second"),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        86_400..=2_591_999 => (secs / 86_400, "day"),
        2_592_000..=31_535_999 => (secs / 2_592_000, "month"),
        _ => (secs / 31_536_000, "year"),
    };
    if unit == "second" && n < 2 {
        return "just now".into();
    }
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["REPOSITORY", "TAG", "SIZE"],
            &[vec!["alpine".into(), "latest".into(), "7.8 MiB".into()], vec!["127.0.0.1:5000/x".into(), "v1".into(), "1 B".into()]],
        );
        expect_test::expect![[r#"
            REPOSITORY         TAG      SIZE
            alpine             latest   7.8 MiB
            127.0.0.1:5000/x   v1       1 B
        "#]]
        .assert_eq(&t);
    }

    #[test]
    fn ago_is_human() {
        let now = time::macros::datetime!(2026-01-02 00:00 UTC);
        assert_eq!(ago(Some("2026-01-01T23:57:00Z"), now), "3 minutes ago");
        assert_eq!(ago(Some("2025-12-01T00:00:00Z"), now), "1 month ago");
        assert_eq!(ago(None, now), "N/A");
    }
}
