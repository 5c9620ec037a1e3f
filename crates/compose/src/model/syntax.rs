//! Compose's short syntaxes rewritten to the long ones, value by value: scalars as text,
//! commands split like a shell, `ports` and `volumes` strings parsed into their long forms,
//! healthcheck tests, and `KEY=VALUE` lists as maps (compose-spec `ports`, `volumes`,
//! `environment`, `labels` sections).

use serde_json::{Map, Value as J, json};

use super::ModelError;

/// A scalar as text (strings, numbers, booleans), as compose reads most values.
pub(crate) fn text(v: &J) -> Option<String> {
    match v {
        J::String(s) => Some(s.clone()),
        J::Number(n) if n.is_f64() => n.as_f64().map(crate::yaml::float_text),
        J::Number(n) => Some(n.to_string()),
        J::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(super) fn truthy(v: &J) -> bool {
    match v {
        J::Bool(b) => *b,
        J::String(s) => matches!(s.as_str(), "true" | "True" | "TRUE"),
        _ => false,
    }
}

pub(super) fn strings(v: &J) -> Vec<String> {
    match v {
        J::Array(a) => a.iter().filter_map(text).collect(),
        J::Null => vec![],
        other => text(other).into_iter().collect(),
    }
}

/// A command as a list: strings are split like a shell (no expansion), as compose does.
pub(super) fn command(service: &str, v: &J) -> Result<J, ModelError> {
    match v {
        J::String(text) => shell_words::split(text)
            .map(|w| json!(w))
            .map_err(|e| ModelError::Service { service: service.to_owned(), message: format!("cannot split the command {text:?}: {e}") }),
        J::Array(_) => Ok(json!(strings(v))),
        _ => Ok(J::Null),
    }
}

pub(super) fn port(service: &str, v: &J) -> Result<Vec<J>, ModelError> {
    let bad = |m: String| ModelError::Service { service: service.to_owned(), message: m };
    let text = match v {
        J::Object(o) => {
            let target = o.get("target").and_then(text).ok_or_else(|| bad("a port needs a target".into()))?;
            let published = o.get("published").and_then(text).unwrap_or_default();
            let proto = o.get("protocol").and_then(text).unwrap_or_else(|| "tcp".into());
            let ip = match o.get("host_ip").and_then(text) {
                Some(ip) if ip.contains(':') => format!("[{ip}]:"),
                Some(ip) if !ip.is_empty() => format!("{ip}:"),
                _ if published.is_empty() => String::new(),
                _ => ":".into(),
            };
            let host = if published.is_empty() { String::new() } else { format!("{published}:") };
            if ip == ":" { format!("{host}{target}/{proto}") } else { format!("{ip}{host}{target}/{proto}") }
        }
        other => text(other).unwrap_or_default(),
    };
    let specs = atoll_spec::network::parse_publish(&text).map_err(|e| bad(e.to_string()))?;
    Ok(specs
        .into_iter()
        .map(|p| {
            let mut o = Map::new();
            o.insert("mode".into(), json!("ingress"));
            if let Some(ip) = p.host_ip {
                o.insert("host_ip".into(), json!(ip.to_string()));
            }
            o.insert("target".into(), json!(p.container_port));
            match (p.host_port, p.host_port_end) {
                (0, _) => {}
                (a, Some(b)) if b != a => {
                    o.insert("published".into(), json!(format!("{a}-{b}")));
                }
                (a, _) => {
                    o.insert("published".into(), json!(a.to_string()));
                }
            }
            o.insert("protocol".into(), json!(p.protocol.to_string()));
            J::Object(o)
        })
        .collect())
}

pub(super) fn volume(service: &str, v: &J) -> Result<J, ModelError> {
    let bad = |m: String| ModelError::Service { service: service.to_owned(), message: m };
    match v {
        J::String(text) => {
            let parts: Vec<&str> = text.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [t] => ("", *t, ""),
                [s, t] => (*s, *t, ""),
                [s, t, m] => (*s, *t, *m),
                _ => return Err(bad(format!("invalid volume {text:?}: use [SOURCE:]TARGET[:MODE]"))),
            };
            let mut o = Map::new();
            let kind = if source.is_empty() {
                "volume"
            } else if source.starts_with('/') {
                "bind"
            } else {
                "volume"
            };
            o.insert("type".into(), json!(kind));
            if !source.is_empty() {
                o.insert("source".into(), json!(source));
            }
            o.insert("target".into(), json!(target));
            let modes: Vec<&str> = mode.split(',').filter(|m| !m.is_empty()).collect();
            if modes.contains(&"ro") {
                o.insert("read_only".into(), json!(true));
            }
            let propagation = modes.iter().find(|m| matches!(**m, "rprivate" | "private" | "rslave" | "slave" | "rshared" | "shared"));
            if kind == "bind" {
                let mut b = json!({"create_host_path": true});
                if let Some(p) = propagation {
                    b["propagation"] = json!(p);
                }
                o.insert("bind".into(), b);
            }
            if kind == "volume" && modes.contains(&"nocopy") {
                o.insert("volume".into(), json!({"nocopy": true}));
            }
            Ok(J::Object(o))
        }
        J::Object(o) => {
            let mut o = o.clone();
            if let Some(ro) = o.get("read_only") {
                let ro = truthy(ro);
                o.insert("read_only".into(), json!(ro));
            }
            if o.get("target").and_then(text).is_none() {
                return Err(bad("a volume needs a target".into()));
            }
            Ok(J::Object(o))
        }
        _ => Err(bad("invalid volume entry".into())),
    }
}

pub(super) fn healthcheck(v: &J) -> J {
    let mut o = v.as_object().cloned().unwrap_or_default();
    match o.get("test") {
        Some(J::String(t)) if t == "NONE" => {
            o.insert("disable".into(), json!(true));
        }
        Some(J::String(t)) => {
            let t = t.clone();
            o.insert("test".into(), json!(["CMD-SHELL", t]));
        }
        Some(J::Array(a)) if a.first().and_then(J::as_str) == Some("NONE") => {
            o.insert("disable".into(), json!(true));
        }
        _ => {}
    }
    if let Some(d) = o.get("disable") {
        let d = truthy(d);
        o.insert("disable".into(), json!(d));
    }
    if let Some(r) = o.get("retries").and_then(text) {
        o.insert("retries".into(), json!(r.parse::<u64>().unwrap_or(3)));
    }
    J::Object(o)
}

pub(super) fn kv_map(v: &J) -> Map<String, J> {
    match v {
        J::Object(o) => o.iter().map(|(k, v)| (k.clone(), text(v).map_or(J::Null, J::String))).collect(),
        J::Array(a) => a
            .iter()
            .filter_map(text)
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_owned(), J::String(v.to_owned())),
                None => (e, J::Null),
            })
            .collect(),
        _ => Map::new(),
    }
}

/// [`kv_map`] for a service's `key`, refusing an entry without a name (`=value`), which
/// neither a container nor the mapping form (what `config` prints) can hold.
pub(super) fn named_kv_map(service: &str, key: &str, v: &J) -> Result<Map<String, J>, ModelError> {
    let m = kv_map(v);
    if let Some(value) = m.get("") {
        let value = text(value).unwrap_or_default();
        return Err(ModelError::Service {
            service: service.to_owned(),
            message: format!("the {key} entry \"={value}\" has no name: write NAME={value}"),
        });
    }
    Ok(m)
}
