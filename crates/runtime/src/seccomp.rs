//! The default seccomp profile: `data/seccomp.json` (Atoll's own policy, as data) turned into
//! the OCI `linux.seccomp` object for a capability set and an architecture.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Value, json};

const PROFILE: &str = include_str!("../data/seccomp.json");
const EPERM: u32 = 1;

#[derive(Debug, Deserialize)]
struct Profile {
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    names: Vec<String>,
    #[serde(default)]
    unless_cap: Option<String>,
    #[serde(default)]
    errno: Option<u32>,
    /// Deny only when the first argument has any of these flag bits.
    #[serde(default)]
    arg0_has_any_flag: Vec<u64>,
}

/// The architectures a filter must cover on this host (native plus its compat ABIs).
pub fn architectures(arch: &str) -> Vec<&'static str> {
    match arch {
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "riscv64" => vec!["SCMP_ARCH_RISCV64"],
        "s390x" => vec!["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
        "powerpc64" => vec!["SCMP_ARCH_PPC64LE"],
        _ => vec![],
    }
}

/// The OCI seccomp object for a container holding `caps`.
pub fn profile(caps: &BTreeSet<String>, arch: &str) -> Value {
    let profile: Profile = serde_json::from_str(PROFILE).expect("data/seccomp.json is valid (tested)");
    let mut syscalls = Vec::new();
    for rule in profile.rules {
        if rule.unless_cap.as_ref().is_some_and(|c| caps.contains(c)) {
            continue;
        }
        let errno = rule.errno.unwrap_or(EPERM);
        if rule.arg0_has_any_flag.is_empty() {
            syscalls.push(json!({"names": rule.names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno}));
        } else {
            for flag in rule.arg0_has_any_flag {
                syscalls.push(json!({
                    "names": rule.names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno,
                    "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
                }));
            }
        }
    }
    json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": architectures(arch), "syscalls": syscalls})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(v: &Value) -> BTreeSet<String> {
        v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn default_caps_deny_mount_and_modules() {
        let caps: BTreeSet<String> = atoll_spec::container::DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
        let p = profile(&caps, "x86_64");
        let d = denied(&p);
        for name in ["mount", "init_module", "unshare", "keyctl", "bpf", "clone3", "kexec_load", "io_uring_setup"] {
            assert!(d.contains(name), "{name} should be denied");
        }
        assert_eq!(p["architectures"][0], "SCMP_ARCH_X86_64");
        let parsed: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(p).unwrap();
        assert!(!parsed.syscalls().as_ref().unwrap().is_empty());
    }

    #[test]
    fn capabilities_lift_their_rules() {
        let caps: BTreeSet<String> = ["CAP_SYS_ADMIN".to_owned(), "CAP_SYS_MODULE".to_owned()].into();
        let d = denied(&profile(&caps, "x86_64"));
        assert!(!d.contains("mount") && !d.contains("init_module") && !d.contains("clone"));
        assert!(d.contains("keyctl"), "unconditional rules stay");
    }
}
