//! What an OCI runtime's refusal to run a process means, in docker's terms: a command that
//! does not exist exits 127, one that exists but cannot be run exits 126 (as a shell does),
//! and anything else is the engine's own failure (125 for `run`). Docker decides this from
//! the runtime's message (moby's `translateContainerdStartErr`, the CLI's
//! `runStartContainerErr`); so does this, for runc's and crun's wording. Pure.

/// Why a process could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecFailure {
    /// Not found: no such file, or not in `$PATH` (exit code 127).
    NotFound,
    /// Found but not runnable: no execute permission, a directory, a bad format (126).
    CannotInvoke,
}

impl ExecFailure {
    /// The exit code a shell (and docker) reports for it.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::NotFound => 127,
            Self::CannotInvoke => 126,
        }
    }
}

/// Classifies a runtime's error message about starting a process (`runc create`/`run`/`exec`,
/// `crun` alike); `None` when the failure is not about the command itself.
pub fn classify(message: &str) -> Option<ExecFailure> {
    let m = message.to_ascii_lowercase();
    // runc: `exec: "cmd": …`; crun: `executable file `cmd` not found…`, `open executable: …`.
    let about_command = m.contains("exec: \"") || m.contains("executable");
    if !about_command {
        return None;
    }
    if m.contains("permission denied") || m.contains("is a directory") || m.contains("exec format error") {
        return Some(ExecFailure::CannotInvoke);
    }
    if m.contains("not found") || m.contains("no such file or directory") {
        return Some(ExecFailure::NotFound);
    }
    None
}

/// Said after a runtime's "not a directory" about a mount: a file mounted over a directory
/// or the other way round (docker says the same).
pub const MOUNT_TYPE_HINT: &str =
    "are you trying to mount a directory onto a file (or vice versa)? Check that the host path exists and is of the expected type";

/// Whether a runtime's message is about a mount whose source and target differ in type.
pub fn is_mount_type_mismatch(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("not a directory") && m.contains("mount")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `run IMG /nonexistent` returned 125 where docker returns 127 (and 126 for a command
    /// that cannot be run); these are runc 1.1's and crun 1.8's words.
    #[test]
    fn runtime_messages_map_to_docker_exit_codes() {
        let cases = [
            (
                r#"runc run failed: unable to start container process: exec: "/nonexistent": stat /nonexistent: no such file or directory"#,
                Some(127),
            ),
            (r#"runc create failed: unable to start container process: exec: "nosuchcmd": executable file not found in $PATH"#, Some(127)),
            (r#"exec failed: unable to start container process: exec: "/etc": permission denied"#, Some(126)),
            (r#"exec failed: unable to start container process: exec: "/etc/passwd": permission denied"#, Some(126)),
            ("crun: executable file `nosuchcmd` not found in $PATH: No such file or directory", Some(127)),
            ("crun: open executable: Permission denied", Some(126)),
            ("crun: open executable: Is a directory", Some(126)),
            (r#"exec: "/bin/x": exec format error"#, Some(126)),
            ("runc create failed: unable to start container process: error during container init: error mounting \"proc\"", None),
            ("the runtime could not create the container: cgroup: permission denied", None),
        ];
        for (msg, code) in cases {
            assert_eq!(classify(msg).map(ExecFailure::exit_code), code, "{msg}");
        }
        assert!(is_mount_type_mismatch(
            r#"error mounting "/srv/f" to rootfs at "/etc": mount /srv/f:/etc (via /proc/self/fd/6), flags: 0x5000: not a directory"#
        ));
    }
}
