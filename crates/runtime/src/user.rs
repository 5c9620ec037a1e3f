//! Resolving `--user USER[:GROUP]` against the image's `/etc/passwd` and `/etc/group`.
//! Pure: callers pass the files' contents.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user {0:?} is not in the image's /etc/passwd; use a numeric UID")]
    UnknownUser(String),
    #[error("group {0:?} is not in the image's /etc/group; use a numeric GID")]
    UnknownGroup(String),
}

/// The identity a container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// From passwd, for `$HOME` when the image sets none.
    pub home: String,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = Vec<&str>> {
    passwd.lines().filter(|l| !l.starts_with('#')).map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 4)
}

/// Resolves `spec` (`""` means root). Numeric IDs need no passwd entry.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Identity, UserError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let by_name = passwd_entries(passwd).find(|f| f[0] == user);
    let by_uid = user.parse::<u32>().ok();
    let (uid, mut gid, name, home) = match (by_uid, by_name) {
        (Some(uid), _) => {
            // A UID without a passwd entry runs with GID 0, as runc does.
            let entry = passwd_entries(passwd).find(|f| f[2].parse::<u32>().ok() == Some(uid));
            let gid = entry.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0);
            let name = entry.as_ref().map(|f| f[0].to_owned());
            let home = entry.as_ref().and_then(|f| f.get(5).map(|s| s.to_string())).unwrap_or_else(|| "/".into());
            (uid, gid, name, home)
        }
        (None, Some(f)) => {
            let uid = f[2].parse().map_err(|_| UserError::UnknownUser(user.to_owned()))?;
            let gid = f[3].parse().unwrap_or(0);
            (uid, gid, Some(f[0].to_owned()), f.get(5).map(|s| s.to_string()).unwrap_or_else(|| "/".into()))
        }
        (None, None) => return Err(UserError::UnknownUser(user.to_owned())),
    };
    let groups: Vec<Vec<&str>> = group.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 3).collect();
    if let Some(g) = grp {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                groups.iter().find(|f| f[0] == g).and_then(|f| f[2].parse().ok()).ok_or_else(|| UserError::UnknownGroup(g.to_owned()))?
            }
        };
    }
    // Supplementary groups list the user by name in the group file.
    let additional_gids = match (&name, grp) {
        (Some(n), None) => groups
            .iter()
            .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|u| u == n)))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Identity { uid, gid, additional_gids, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nlogs:x:4:www\n";

    #[test]
    fn resolves_names_ids_and_groups() {
        assert_eq!(resolve("", PASSWD, GROUP).unwrap().uid, 0);
        let w = resolve("www", PASSWD, GROUP).unwrap();
        assert_eq!((w.uid, w.gid, w.additional_gids.clone(), w.home.as_str()), (33, 33, vec![4], "/var/www"));
        let n = resolve("1000:1000", PASSWD, GROUP).unwrap();
        assert_eq!((n.uid, n.gid), (1000, 1000));
        let n = resolve("1000", PASSWD, GROUP).unwrap();
        assert_eq!((n.uid, n.gid), (1000, 0));
        assert_eq!(resolve("33:logs", PASSWD, GROUP).unwrap().gid, 4);
        assert!(matches!(resolve("nobody", PASSWD, GROUP), Err(UserError::UnknownUser(_))));
        assert!(matches!(resolve("www:nogroup", PASSWD, GROUP), Err(UserError::UnknownGroup(_))));
    }
}
