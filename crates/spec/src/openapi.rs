//! OpenAPI schemas that state what validation enforces, for fields whose constraint a derive
//! attribute cannot say (patterns on list items, enums of names, map keys): a client, or a
//! schema fuzzer, generating from the document sends what the API accepts. Each function is a
//! `#[schema(schema_with = …)]` target.

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};

/// Container, volume and network names: docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub const NAME_PATTERN: &str = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$";

/// Signal names (with or without `SIG`) and numbers, as `kill` and `--stop-signal` take them.
pub const SIGNAL_PATTERN: &str = "^((SIG)?(HUP|INT|QUIT|ILL|TRAP|ABRT|IOT|BUS|FPE|KILL|USR1|SEGV|USR2|PIPE|ALRM|TERM|STKFLT|CHLD|CLD|CONT|STOP|TSTP|TTIN|TTOU|URG|XCPU|XFSZ|VTALRM|PROF|WINCH|IO|POLL|PWR|SYS|RTMIN|RTMIN\\+([1-9]|1[0-5])|RTMAX|RTMAX-([1-9]|1[0-4]))|0*([1-9]|[1-5][0-9]|6[0-4]))$";

/// A docker image reference: `[registry[:port]/]name[:tag][@sha256:digest]`.
pub const IMAGE_PATTERN: &str = "^([a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(:[0-9]{1,5})?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$";

fn string(pattern: &str, description: &str) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)).pattern(Some(pattern)).description(Some(description))
}

fn list(item: ObjectBuilder, description: &str) -> RefOr<Schema> {
    ArrayBuilder::new().items(item).description(Some(description)).build().into()
}

/// `KEY=VALUE` entries.
pub fn env_list() -> RefOr<Schema> {
    list(string("^[^=\\s\\u0000]+=[^\\u0000]*$", "KEY=VALUE"), "Environment entries, added to (and overriding) the image's")
}

/// `--cap-add`/`--cap-drop` names.
pub fn capabilities() -> RefOr<Schema> {
    let names: Vec<String> = crate::container::ALL_CAPS
        .iter()
        .flat_map(|c| [c.to_string(), c.trim_start_matches("CAP_").to_owned()])
        .chain(["ALL".to_owned()])
        .collect();
    let item = ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)).enum_values(Some(names));
    list(item, "Capability names, with or without CAP_, or ALL")
}

/// `NAME:IP` or `NAME:host-gateway`.
pub fn extra_hosts() -> RefOr<Schema> {
    list(
        string("^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?:(host-gateway|[0-9]{1,3}(\\.[0-9]{1,3}){3}|[0-9a-fA-F:]+)$", "NAME:IP"),
        "Lines for /etc/hosts",
    )
}

/// Namespaced sysctls: `net.*`, `kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`.
pub fn sysctls() -> RefOr<Schema> {
    ObjectBuilder::new()
        .property_names(Some(string(
            "^(net\\.[a-z0-9_]+(\\.[a-z0-9_]+)*|kernel\\.(shmmax|shmall|shmmni|shm_rmid_forced|msgmax|msgmnb|msgmni|sem)|fs\\.mqueue\\.[a-z_]+)$",
            "a namespaced sysctl",
        )))
        .additional_properties(Some(string("^[^\\n\\u0000]*$", "its value")))
        .description(Some("Namespaced kernel parameters (net.* needs a network of the container's own)"))
        .build()
        .into()
}

/// An island member's label key: 1 to 253 letters, digits, `.`, `-`, `_` and `/`.
pub const LABEL_KEY_PATTERN: &str = "^[A-Za-z0-9._/-]{1,253}$";

/// Labels to set on an island member: at most 64, values up to 1024 characters without
/// control characters.
pub fn node_labels() -> RefOr<Schema> {
    ObjectBuilder::new()
        .property_names(Some(string(LABEL_KEY_PATTERN, "a label key")))
        .additional_properties(Some(string("^[^\\u0000-\\u001f\\u007f-\\u009f]*$", "its value").max_length(Some(1024))))
        .max_properties(Some(64))
        .description(Some("Labels to set, KEY: VALUE"))
        .build()
        .into()
}

/// Label keys to remove from an island member.
pub fn node_label_keys() -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(string(LABEL_KEY_PATTERN, "a label key"))
        .max_items(Some(64))
        .description(Some("Label keys to remove"))
        .build()
        .into()
}

/// `--ulimit`s by name.
pub fn ulimits() -> RefOr<Schema> {
    let limit = ObjectBuilder::new()
        .property("soft", ObjectBuilder::new().schema_type(SchemaType::Type(Type::Integer)).minimum(Some(-1)))
        .property("hard", ObjectBuilder::new().schema_type(SchemaType::Type(Type::Integer)).minimum(Some(-1)))
        .required("soft")
        .required("hard")
        .description(Some("soft <= hard; -1 is unlimited"));
    ObjectBuilder::new()
        .property_names(Some(
            ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)).enum_values(Some(crate::container::ULIMITS.to_vec())),
        ))
        .additional_properties(Some(limit))
        .description(Some("Resource limits by name"))
        .build()
        .into()
}

/// DNS names a container answers to on a network (`--network-alias`).
pub fn aliases() -> RefOr<Schema> {
    list(
        string("^[a-zA-Z0-9_][a-zA-Z0-9_-]{0,62}(\\.[a-zA-Z0-9_][a-zA-Z0-9_-]{0,62})*$", "a DNS name"),
        "More names the container answers to on this network",
    )
}

/// A network's subnets: at most one IPv4 CIDR (/8 to /30) and one IPv6 CIDR (/48 to /120).
pub fn subnets() -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(string("^([0-9]{1,3}(\\.[0-9]{1,3}){3}/([89]|[12][0-9]|30)|[0-9a-fA-F:]+/([4-9][0-9]|1[01][0-9]|120))$", "a CIDR"))
        .max_items(Some(2))
        .description(Some("At most one IPv4 and one IPv6 subnet, in CIDR notation"))
        .build()
        .into()
}

/// Network driver options Atoll knows: docker's gateway modes.
pub fn network_options() -> RefOr<Schema> {
    ObjectBuilder::new()
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .enum_values(Some([crate::network::GATEWAY_MODE_IPV4, crate::network::GATEWAY_MODE_IPV6])),
        ))
        .additional_properties(Some(
            ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)).enum_values(Some(["nat", "nat-unprotected"])),
        ))
        .description(Some(
            "Driver options by docker's names: the gateway modes (nat, or nat-unprotected to let outside traffic reach unpublished ports)",
        ))
        .build()
        .into()
}

/// A command line: at least the program, no NUL anywhere (an argv cannot hold one).
pub fn command() -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(string("^[^\\u0000]*$", "an argument"))
        .min_items(Some(1))
        .description(Some("The program and its arguments"))
        .build()
        .into()
}

/// A container's `cmd`: null keeps the image's.
pub fn cmd() -> RefOr<Schema> {
    optional_arguments("Replaces the image's Cmd.")
}

/// A container's `entrypoint`: null keeps the image's.
pub fn entrypoint() -> RefOr<Schema> {
    optional_arguments("Replaces the image's Entrypoint (`[\"\"]` clears it).")
}

/// Replacement arguments: like [`command`], but may be empty.
fn optional_arguments(description: &str) -> RefOr<Schema> {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(string("^[^\\u0000]*$", "an argument"))
        .description(Some(description))
        .build()
        .into()
}

/// A health probe: `["NONE"]`, `["CMD", program, args…]` or `["CMD-SHELL", script]`; no
/// argument holds a NUL.
pub fn health_test() -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(string("^[^\\u0000]*$", "a word of the probe"))
        .min_items(Some(2))
        .description(Some("The probe, run inside the container (`[\"CMD-SHELL\", \"…\"]` runs through `/bin/sh -c`)."))
        .build()
        .into()
}

/// A terminal's size: `[rows, columns]`.
pub fn terminal_size() -> RefOr<Schema> {
    let dim = || ObjectBuilder::new().schema_type(SchemaType::Type(Type::Integer)).minimum(Some(1)).maximum(Some(65535));
    ArrayBuilder::new().items(dim()).min_items(Some(2)).max_items(Some(2)).description(Some("[rows, columns]")).build().into()
}

/// The image reference.
pub fn image() -> RefOr<Schema> {
    string(IMAGE_PATTERN, "An image reference: alpine, registry:5000/app:v1, name@sha256:…").build().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, s: &str) -> bool {
        regex_lite::Regex::new(pattern).unwrap().is_match(s)
    }

    /// The documented patterns accept what validation accepts, and refuse what it refuses.
    #[test]
    fn patterns_agree_with_validation() {
        for s in ["web", "a.b-c_1", "0"] {
            assert!(matches(NAME_PATTERN, s) && crate::container::valid_name(s), "{s}");
        }
        for s in ["-web", "", "a b", "a/b"] {
            assert!(!matches(NAME_PATTERN, s) && !crate::container::valid_name(s), "{s}");
        }
        // Every upper-case spelling: the pattern and the parser agree (the parser also takes lower case).
        let names = "HUP INT QUIT ILL TRAP ABRT IOT BUS FPE KILL USR1 SEGV USR2 PIPE ALRM TERM STKFLT CHLD CLD CONT STOP TSTP TTIN TTOU URG XCPU XFSZ VTALRM PROF WINCH IO POLL PWR SYS NOPE";
        let mut cases: Vec<String> = names.split(' ').flat_map(|n| [n.to_owned(), format!("SIG{n}")]).collect();
        cases.extend((-1..70).map(|n| n.to_string()));
        cases.extend(["RTMIN", "RTMAX", "SIGRTMIN", "RTMIN+03", "RTMIN+", "+9", "09", ""].map(String::from));
        cases.extend((0..20).flat_map(|n| [format!("RTMIN+{n}"), format!("SIGRTMAX-{n}"), format!("RTMIN-{n}")]));
        for s in &cases {
            assert_eq!(matches(SIGNAL_PATTERN, s), crate::container::parse_signal(s).is_ok(), "{s}");
        }
        for s in [
            "alpine",
            "localhost/busybox",
            "registry:5000/app/x:v1.2",
            "a@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(matches(IMAGE_PATTERN, s), "{s}");
        }
        for s in ["UPPER", "a:", "a@md5:00", ""] {
            assert!(!matches(IMAGE_PATTERN, s), "{s}");
        }
    }
}
