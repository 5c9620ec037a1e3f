//! The checks past types: each pushes a [`Problem`] naming its field. Bounds follow the
//! lexicon (`lexicons/dev.atoll.bundle.json`).

use std::collections::HashSet;

use base64::Engine;

use super::{Manifest, Method, Problem, Runtime};

fn push(problems: &mut Vec<Problem>, field: impl Into<String>, message: impl Into<String>) {
    problems.push(Problem { field: field.into(), message: message.into() });
}

/// Checks every field of `m`; `semver` asks for a semantic version (Atoll's own records).
pub(super) fn manifest(m: &Manifest, semver: bool, problems: &mut Vec<Problem>) {
    if !is_dns_label(&m.name) {
        push(problems, "name", format!("`{}` must be a DNS label: 1-63 lower-case letters, digits and inner hyphens", m.name));
    }
    if m.version.is_empty() || m.version.len() > 64 {
        push(problems, "version", "must be 1-64 characters");
    } else if semver && semver::Version::parse(&m.version).is_err() {
        push(problems, "version", format!("`{}` is not a semantic version (such as 1.2.0)", m.version));
    }
    if m.description.as_ref().is_some_and(|d| d.len() > 2048) {
        push(problems, "description", "is longer than 2048 bytes");
    }
    entry_and_code(m, problems);
    if m.previous_code.len() > 16 {
        push(problems, "previousCode", "lists more than 16 blobs");
    }
    routes(m, problems);
    permissions(m, problems);
    limits(m, problems);
    if m.cron.len() > 32 {
        push(problems, "cron", "has more than 32 jobs");
    }
    for (i, job) in m.cron.iter().enumerate() {
        if let Err(why) = cron_schedule(&job.schedule) {
            push(problems, format!("cron[{i}].schedule"), why);
        }
        if !is_handler(&job.handler) {
            push(
                problems,
                format!("cron[{i}].handler"),
                format!("`{}` is not a handler name (letters, digits, _ $ . -, at most 128)", job.handler),
            );
        }
    }
    secrets(m, problems);
}

fn entry_and_code(m: &Manifest, problems: &mut Vec<Problem>) {
    if m.entry.is_empty() || m.entry.len() > 512 || m.entry.chars().any(|c| c.is_whitespace() || c.is_control()) {
        push(problems, "entry", "must be 1-512 characters without spaces or control characters");
    }
    match (m.runtime, &m.code) {
        (Runtime::Oci, Some(_)) => push(problems, "code", "must be absent for the oci runtime (its entry names the image)"),
        (Runtime::Wasm | Runtime::Deno, None) => push(problems, "code", format!("is required for the {} runtime", runtime_name(m.runtime))),
        (Runtime::Wasm, Some(c)) if c.mime_type != "application/wasm" => {
            push(problems, "code.mimeType", format!("is `{}`; a wasm bundle's code is application/wasm", c.mime_type))
        }
        (Runtime::Deno, Some(c))
            if !["application/javascript", "text/javascript", "application/typescript", "application/x-tar", "application/gzip"]
                .contains(&c.mime_type.as_str()) =>
        {
            push(
                problems,
                "code.mimeType",
                format!("is `{}`; a deno bundle's code is JavaScript, TypeScript or a tar archive", c.mime_type),
            )
        }
        _ => {}
    }
    if m.runtime != Runtime::Oci {
        if !m.command.is_empty() {
            push(problems, "command", "is for the oci runtime only");
        }
        if m.port.is_some() {
            push(problems, "port", "is for the oci runtime only");
        }
    }
    if m.command.len() > 64 || m.command.iter().any(|a| a.len() > 4096 || a.contains('\0')) {
        push(problems, "command", "must be at most 64 arguments of at most 4096 bytes, without NUL");
    }
    if m.port == Some(0) {
        push(problems, "port", "must be 1-65535");
    }
    if m.runtime == Runtime::Deno && m.entry.split('/').any(|s| s == "..") {
        push(problems, "entry", "must stay inside the bundle (no ..)");
    }
}

fn runtime_name(r: Runtime) -> &'static str {
    match r {
        Runtime::Wasm => "wasm",
        Runtime::Deno => "deno",
        Runtime::Oci => "oci",
    }
}

fn routes(m: &Manifest, problems: &mut Vec<Problem>) {
    if m.routes.is_empty() {
        push(problems, "routes", "must list at least one route");
    }
    if m.routes.len() > 256 {
        push(problems, "routes", "has more than 256 routes");
    }
    let mut seen: HashSet<(Method, &str)> = HashSet::new();
    for (i, r) in m.routes.iter().enumerate() {
        match path_pattern(&r.path) {
            Err(why) => push(problems, format!("routes[{i}].path"), why),
            Ok(()) => {
                if !seen.insert((r.method, r.path.as_str())) {
                    push(problems, format!("routes[{i}]"), format!("repeats an earlier route ({:?} {})", r.method, r.path));
                }
            }
        }
        if !is_handler(&r.handler) {
            push(
                problems,
                format!("routes[{i}].handler"),
                format!("`{}` is not a handler name (letters, digits, _ $ . -, at most 128)", r.handler),
            );
        }
    }
}

/// A route's path: `/`, then segments that are literals, `:name` parameters (each name once),
/// or `*` as the last.
pub(super) fn path_pattern(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` must start with /"));
    }
    if path.len() > 512 {
        return Err("is longer than 512 bytes".into());
    }
    if path == "/" {
        return Ok(());
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let mut params = HashSet::new();
    for (i, s) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if s.is_empty() {
            if last {
                continue; // a trailing slash
            }
            return Err(format!("`{path}` has an empty segment (//)"));
        }
        if *s == "." || *s == ".." {
            return Err(format!("`{path}` has a `{s}` segment"));
        }
        if *s == "*" {
            if !last {
                return Err(format!("`{path}`: * may only be the last segment"));
            }
            continue;
        }
        if let Some(name) = s.strip_prefix(':') {
            if !is_identifier(name) {
                return Err(format!("`{path}`: parameter `:{name}` needs a name of letters, digits and _"));
            }
            if !params.insert(name) {
                return Err(format!("`{path}` names the parameter `:{name}` twice"));
            }
            continue;
        }
        if let Some(bad) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "-._~!$&'()+,;=@%".contains(*c))) {
            return Err(format!("`{path}`: `{bad}` is not allowed in a path segment"));
        }
    }
    Ok(())
}

fn permissions(m: &Manifest, problems: &mut Vec<Problem>) {
    let p = &m.permissions;
    for (field, list) in
        [("permissions.net", &p.net), ("permissions.read", &p.read), ("permissions.write", &p.write), ("permissions.env", &p.env)]
    {
        if list.len() > 64 {
            push(problems, field, "lists more than 64 entries");
        }
    }
    for (i, h) in p.net.iter().enumerate() {
        if let Err(why) = net_host(h) {
            push(problems, format!("permissions.net[{i}]"), why);
        }
    }
    for (field, list) in [("permissions.read", &p.read), ("permissions.write", &p.write)] {
        for (i, path) in list.iter().enumerate() {
            if let Err(why) = fs_path(path) {
                push(problems, format!("{field}[{i}]"), why);
            }
        }
    }
    for (i, e) in p.env.iter().enumerate() {
        if !is_env_name(e) {
            push(problems, format!("permissions.env[{i}]"), format!("`{e}` is not an environment variable name"));
        } else if reserved_env(e) {
            push(problems, format!("permissions.env[{i}]"), format!("`{e}` is reserved (the loader's, the runtime's or the runner's own)"));
        }
    }
}

/// `host`, `host:port`, `[v6]:port`, an IP, or `*.domain`.
pub(super) fn net_host(entry: &str) -> Result<(), String> {
    if entry.is_empty() || entry.len() > 260 {
        return Err("must be 1-260 characters".into());
    }
    if entry.parse::<std::net::IpAddr>().is_ok() || entry.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = match entry.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (entry, None),
    };
    if let Some(p) = port
        && !p.parse::<u16>().is_ok_and(|n| n > 0)
    {
        return Err(format!("`{entry}`: `{p}` is not a port"));
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let labels: Vec<&str> = name.split('.').collect();
    if name.len() > 253 || labels.iter().any(|l| !is_host_label(l)) {
        return Err(format!("`{entry}` is not a host name, `host:port`, an IP address or `*.domain`"));
    }
    if host.starts_with("*.") && labels.len() < 2 {
        return Err(format!("`{entry}`: a wildcard must stand above a domain of two labels at least (*.example.com)"));
    }
    Ok(())
}

/// An absolute, normal path.
pub(super) fn fs_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` must be an absolute path"));
    }
    if path.len() > 1024 || path.contains('\0') {
        return Err("must be at most 1024 bytes, without NUL".into());
    }
    if path.split('/').skip(1).any(|s| s == "." || s == "..") || path.contains("//") {
        return Err(format!("`{path}` must be normal (no ., .. or //)"));
    }
    Ok(())
}

fn limits(m: &Manifest, problems: &mut Vec<Problem>) {
    let l = &m.limits;
    for (field, value, max) in [
        ("limits.memoryMb", l.memory_mb, 65_536),
        ("limits.cpuMsPerRequest", l.cpu_ms_per_request, 3_600_000),
        ("limits.wallTimeoutMs", l.wall_timeout_ms, 3_600_000),
        ("limits.maxConcurrent", l.max_concurrent, 100_000),
    ] {
        if let Some(v) = value
            && !(1..=max).contains(&v)
        {
            push(problems, field, format!("is {v}; it must be between 1 and {max}"));
        }
    }
}

/// Five-field cron (or `@hourly`, `@daily`…), as croner parses it.
/// Cron's five fields, or six with seconds first (croner's and Quartz's order).
pub fn cron_parser() -> croner::parser::CronParser {
    croner::parser::CronParser::builder().seconds(croner::parser::Seconds::Optional).build()
}

pub(super) fn cron_schedule(schedule: &str) -> Result<(), String> {
    let s = schedule.trim();
    if s.len() > 128 {
        return Err("is longer than 128 bytes".into());
    }
    let nickname = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"].contains(&s);
    if !nickname && !matches!(s.split_whitespace().count(), 5 | 6) {
        return Err(format!(
            "`{schedule}` must have five fields (minute hour day-of-month month day-of-week), six (seconds first), or be @hourly, @daily…"
        ));
    }
    cron_parser().parse(s).map(|_| ()).map_err(|e| format!("`{schedule}`: {e}"))
}

fn secrets(m: &Manifest, problems: &mut Vec<Problem>) {
    if m.secrets.len() > 64 {
        push(problems, "secrets", "lists more than 64 secrets");
    }
    let mut names = HashSet::new();
    for (i, s) in m.secrets.iter().enumerate() {
        if !is_env_name(&s.name) {
            push(problems, format!("secrets[{i}].name"), format!("`{}` is not an environment variable name", s.name));
        } else if reserved_env(&s.name) {
            push(
                problems,
                format!("secrets[{i}].name"),
                format!("`{}` is reserved (the loader's, the runtime's or the runner's own)", s.name),
            );
        } else if !names.insert(s.name.as_str()) {
            push(problems, format!("secrets[{i}].name"), format!("`{}` is declared twice", s.name));
        } else if m.permissions.env.contains(&s.name) {
            push(
                problems,
                format!("secrets[{i}].name"),
                format!("`{}` is also in permissions.env; a secret is given as that variable already", s.name),
            );
        }
        for (j, sealed) in s.sealed.iter().enumerate() {
            let b64 = base64::engine::general_purpose::STANDARD;
            if b64.decode(&sealed.recipient).map(|k| k.len()) != Ok(32) {
                push(problems, format!("secrets[{i}].sealed[{j}].recipient"), "must be an X25519 public key (32 bytes, base64)");
            }
            // A sealed box is 48 bytes of overhead plus the value.
            if sealed.ciphertext.len() > 65_536 || b64.decode(&sealed.ciphertext).map(|c| c.len() >= 48) != Ok(true) {
                push(problems, format!("secrets[{i}].sealed[{j}].ciphertext"), "must be a sealed box in base64 (at most 64 KiB)");
            }
        }
    }
}

pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_host_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !s.starts_with('-') && !s.ends_with('-')
}

fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_') && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub(super) fn is_env_name(s: &str) -> bool {
    s.len() <= 128 && is_identifier(s)
}

/// Variables a bundle may not set or read through `permissions.env` or `secrets`: the
/// dynamic loader's (`LD_*`), the runtimes' own (`DENO_*`, `NODE_*`, `V8_*`), the shell's
/// (`BASH_*`, `ENV`, `IFS`), and what the runner sets itself (`PATH`, `HOME`, `PORT`, the
/// proxy variables). Case-insensitive, as some programs read them either way.
pub fn reserved_env(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["LD_", "DENO_", "NODE_", "V8_", "BASH_", "GCONV_", "MALLOC_"].iter().any(|p| n.starts_with(p))
        || [
            "PATH",
            "HOME",
            "PORT",
            "ENV",
            "IFS",
            "SHELL",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "NO_PROXY",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "NO_COLOR",
            "TZDIR",
            "LOCALDOMAIN",
            "RES_OPTIONS",
            "HOSTALIASES",
        ]
        .contains(&n.as_str())
}

fn is_handler(s: &str) -> bool {
    let mut bytes = s.bytes();
    s.len() <= 128
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'$')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_$.-".contains(&b))
}
