//! Mounts as the user asks for them: `-v`, `--mount`, `--tmpfs` and compose's volumes, parsed
//! and checked; the order they are made in (parents first). Pure.

use serde::{Deserialize, Serialize};

use crate::SpecError;
use crate::container::valid_name;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path.
    Bind,
    /// A named volume managed by Atoll.
    Volume,
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Mount {
    pub kind: MountKind,
    /// Host path (bind), volume name (volume; empty for an anonymous volume, which the engine
    /// names at create), empty (tmpfs).
    #[schema(max_length = 4096, pattern = "^(/[^\\u0000]*|[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127})?$")]
    pub source: String,
    /// An absolute path other than `/`, without `..`.
    #[schema(max_length = 4096, pattern = "^(/[a-zA-Z0-9_-][a-zA-Z0-9_.-]*)+/?$")]
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
    /// Extra mount options: tmpfs `size=64m`, `mode=1777`, `exec`…; propagation (`rshared`…)
    /// for binds and volumes; [`NO_COPY`] for volumes.
    #[serde(default)]
    pub options: Vec<String>,
}

/// The volume option that keeps an empty volume empty: without it, a volume is filled with
/// the image's content at its target on first mount (docker's `nocopy`).
pub const NO_COPY: &str = "nocopy";

/// Docker's mount modes for volumes on macOS and Windows; accepted and ignored.
const IGNORED_MODES: &[&str] = &["consistent", "cached", "delegated"];

impl Mount {
    /// `-v [SOURCE:]TARGET[:MODES]`: an absolute SOURCE is a bind mount, a name is a named
    /// volume, no SOURCE is an anonymous volume. MODES: `ro`, `rw`, propagation, `nocopy`
    /// (volumes), `z`/`Z` (accepted, no SELinux here).
    pub fn parse_volume(s: &str) -> Result<Self, SpecError> {
        let err = || SpecError::Volume(s.to_owned());
        let parts: Vec<&str> = s.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [dst] => ("", *dst, None),
            [src, dst] => (*src, *dst, None),
            [src, dst, mode] => (*src, *dst, Some(*mode)),
            _ => return Err(err()),
        };
        let kind = if source.starts_with('/') {
            MountKind::Bind
        } else if (source.is_empty() && parts.len() == 1) || valid_name(source) {
            MountKind::Volume
        } else {
            return Err(err());
        };
        let mut read_only = false;
        let mut options = Vec::new();
        if let Some(m) = mode {
            for o in m.split(',') {
                match o {
                    "ro" => read_only = true,
                    "rw" => read_only = false,
                    "z" | "Z" | "rprivate" | "private" | "rslave" | "slave" | "rshared" | "shared" => options.push(o.to_owned()),
                    NO_COPY if kind == MountKind::Volume => options.push(o.to_owned()),
                    o if IGNORED_MODES.contains(&o) => {}
                    _ => return Err(err()),
                }
            }
        }
        if !target.starts_with('/') {
            return Err(err());
        }
        Ok(Self { kind, source: source.to_owned(), target: target.to_owned(), read_only, options })
    }

    /// `--tmpfs TARGET[:OPTIONS]`.
    pub fn parse_tmpfs(s: &str) -> Result<Self, SpecError> {
        let (target, opts) = s.split_once(':').unwrap_or((s, ""));
        if !target.starts_with('/') {
            return Err(SpecError::Tmpfs(s.to_owned()));
        }
        let options: Vec<String> = opts.split(',').filter(|o| !o.is_empty()).map(str::to_owned).collect();
        let read_only = options.iter().any(|o| o == "ro");
        Ok(Self { kind: MountKind::Tmpfs, source: String::new(), target: target.to_owned(), read_only, options })
    }

    /// `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly][,volume-nocopy]
    /// [,bind-propagation=…][,tmpfs-size=…][,tmpfs-mode=…]`, docker's long form (`src`, `dst`,
    /// `destination` and `ro` are accepted too). The default type is `volume`.
    pub fn parse_mount(s: &str) -> Result<Self, SpecError> {
        let err = |why: &str| SpecError::MountOption(s.to_owned(), why.to_owned());
        let (mut kind, mut source, mut target, mut read_only, mut options) = (MountKind::Volume, String::new(), None, false, Vec::new());
        let truthy = |v: Option<&str>| match v {
            None | Some("1" | "true") => Ok(true),
            Some("0" | "false") => Ok(false),
            Some(_) => Err(err("use true or false")),
        };
        for field in s.split(',').filter(|f| !f.is_empty()) {
            let (k, v) = match field.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v)),
                None => (field.trim().to_ascii_lowercase(), None),
            };
            match (k.as_str(), v) {
                ("type", Some("bind")) => kind = MountKind::Bind,
                ("type", Some("volume")) => kind = MountKind::Volume,
                ("type", Some("tmpfs")) => kind = MountKind::Tmpfs,
                ("type", _) => return Err(err("type is bind, volume or tmpfs")),
                ("source" | "src", Some(v)) => source = v.to_owned(),
                ("target" | "dst" | "destination", Some(v)) => target = Some(v.to_owned()),
                ("readonly" | "ro", v) => read_only = truthy(v)?,
                ("volume-nocopy", v) => {
                    if truthy(v)? {
                        options.push(NO_COPY.to_owned());
                    }
                }
                ("bind-propagation", Some(p @ ("rprivate" | "private" | "rslave" | "slave" | "rshared" | "shared"))) => {
                    options.push(p.to_owned())
                }
                ("tmpfs-size", Some(v)) => {
                    options.push(format!("size={}", crate::units::parse_size(v).map_err(|_| err("tmpfs-size is a size like 64m"))?))
                }
                ("tmpfs-mode", Some(v)) if u32::from_str_radix(v, 8).is_ok() => options.push(format!("mode={v}")),
                ("consistency", Some(_)) | ("bind-nonrecursive", _) => {}
                (k, _) => return Err(err(&format!("unknown or malformed option {k:?}"))),
            }
        }
        let target = target.filter(|t| t.starts_with('/')).ok_or_else(|| err("give an absolute target="))?;
        match kind {
            MountKind::Bind if !source.starts_with('/') => return Err(err("a bind mount needs an absolute source=")),
            MountKind::Volume if !source.is_empty() && !valid_name(&source) => return Err(err("invalid volume name")),
            MountKind::Tmpfs if !source.is_empty() => return Err(err("a tmpfs has no source")),
            _ => {}
        }
        if kind != MountKind::Volume && options.iter().any(|o| o == NO_COPY) {
            return Err(err("volume-nocopy is for volumes"));
        }
        if kind == MountKind::Tmpfs && read_only {
            options.push("ro".into());
        }
        Ok(Self { kind, source, target, read_only, options })
    }

    /// A volume without a name: the engine names it at create, and `--rm` or `rm -v` remove it.
    pub fn is_anonymous(&self) -> bool {
        self.kind == MountKind::Volume && self.source.is_empty()
    }

    /// Whether an empty volume stays empty (`nocopy`) instead of receiving the image's content.
    pub fn no_copy(&self) -> bool {
        self.options.iter().any(|o| o == NO_COPY)
    }

    /// The number of path components of the target (see [`path_depth`]).
    pub fn depth(&self) -> usize {
        path_depth(&self.target)
    }
}

/// The number of components of an absolute path: mounts are made parents first, as docker
/// sorts them, so a mount at `/data/sub` is not hidden by one at `/data`.
pub fn path_depth(p: &str) -> usize {
    p.split('/').filter(|c| !c.is_empty() && *c != ".").count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes() {
        let m = Mount::parse_volume("/srv/data:/data:ro").unwrap();
        assert_eq!((m.kind, m.read_only), (MountKind::Bind, true));
        let m = Mount::parse_volume("dbdata:/var/lib/db").unwrap();
        assert_eq!(m.kind, MountKind::Volume);
        let m = Mount::parse_volume("/var/lib/db").unwrap();
        assert!(m.is_anonymous() && !m.no_copy());
        let m = Mount::parse_volume("db:/var/lib/db:ro,nocopy").unwrap();
        assert!(m.read_only && m.no_copy() && !m.is_anonymous());
        assert_eq!(Mount::parse_volume("db:/x:cached").unwrap().options, Vec::<String>::new());
        for bad in ["a", "/a:b", "/a:/b:xx", ":/b", "bad name:/x", "a:/b:c:d", "/srv:/b:nocopy"] {
            assert!(Mount::parse_volume(bad).is_err(), "{bad}");
        }
        let m = Mount::parse_mount("type=volume,src=db,dst=/var/lib/db,volume-nocopy,readonly").unwrap();
        assert_eq!(
            (m.kind, m.source.as_str(), m.target.as_str(), m.read_only, m.no_copy()),
            (MountKind::Volume, "db", "/var/lib/db", true, true)
        );
        let m = Mount::parse_mount("type=bind,source=/srv,target=/srv,bind-propagation=rshared").unwrap();
        assert_eq!((m.kind, m.options.clone()), (MountKind::Bind, vec!["rshared".to_owned()]));
        let m = Mount::parse_mount("type=tmpfs,destination=/t,tmpfs-size=1m,tmpfs-mode=1770").unwrap();
        assert_eq!(m.options, ["size=1048576", "mode=1770"]);
        assert!(Mount::parse_mount("target=/x").unwrap().is_anonymous());
        for bad in [
            "type=bind,src=rel,dst=/x",
            "type=nfs,dst=/x",
            "src=v",
            "type=bind,src=/a,dst=/b,volume-nocopy",
            "dst=/x,ro=maybe",
            "dst=/x,bogus=1",
        ] {
            assert!(Mount::parse_mount(bad).is_err(), "{bad}");
        }
        let t = Mount::parse_tmpfs("/run:size=64m,mode=1777").unwrap();
        assert_eq!(t.options, vec!["size=64m", "mode=1777"]);
        assert!(Mount::parse_tmpfs("run").is_err());
    }
}
