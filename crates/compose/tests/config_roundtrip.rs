//! `compose config` round-trips: for generated projects full of values that mean something
//! else when printed carelessly (`$`, strings that read as numbers, booleans, null or
//! timestamps, YAML indicators, line breaks, empty values, relative paths, env files), the
//! printed YAML and JSON load again as the same normalised project.

use std::collections::BTreeMap;
use std::path::Path;

use atoll_compose::load::{Options, load};
use atoll_compose::model::{Project, normalise, printable};
use proptest::prelude::*;
use serde_json::{Value as J, json};

const TRICKY: &[&str] = &[
    "$$HOME",
    "$$",
    "a $${B} c",
    "yes",
    "no",
    "on",
    "off",
    "true",
    "False",
    "1",
    "-1",
    "0777",
    "0x1F",
    "1_000",
    "1e3",
    "08",
    ".5",
    "null",
    "~",
    "",
    " ",
    "#",
    "a #b",
    "a: b",
    "- x",
    "[x]",
    "{x: 1}",
    "\"q\"",
    "'s'",
    "\\",
    "x\ny",
    "\ttab",
    "ü é",
    "\u{2028}",
    "<<",
    "...",
    "--- x",
    "@x",
    "`x`",
    "%x",
    "!x",
    "&x",
    "*x",
    "|",
    ">",
    "?",
    ":",
    "08:00",
    "2001-12-14",
    "12:30:45",
    "127.0.0.1:80",
    "=",
    "K=V",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(TRICKY).prop_map(str::to_owned),
        // Any text, its `$` escaped as a compose file must write a literal one.
        "\\PC{0,10}".prop_map(|s| s.replace('$', "$$")),
    ]
}

fn scalar() -> impl Strategy<Value = J> {
    prop_oneof![
        text().prop_map(J::from),
        any::<i32>().prop_map(J::from),
        any::<bool>().prop_map(J::from),
        Just(J::Null),
        (-1e6f64..1e6).prop_map(J::from),
    ]
}

fn extension() -> impl Strategy<Value = J> {
    scalar().prop_recursive(3, 20, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4).prop_map(|m| J::Object(m.into_iter().collect())),
        ]
    })
}

fn service(names: Vec<String>) -> impl Strategy<Value = J> {
    let command = prop_oneof![text().prop_map(J::from), prop::collection::vec(text(), 0..4).prop_map(|v| json!(v))];
    let env = prop_oneof![
        prop::collection::btree_map("[A-Z][A-Z0-9_]{0,4}", scalar(), 0..4).prop_map(|m| json!(m)),
        prop::collection::vec(("[A-Z][A-Z0-9_]{0,4}", prop::option::of(text())), 0..4)
            .prop_map(|v| json!(v.into_iter().map(|(k, v)| v.map_or(k.clone(), |v| format!("{k}={v}"))).collect::<Vec<_>>())),
    ];
    let labels = prop::collection::btree_map("[a-z][a-z.]{0,6}", scalar(), 0..3);
    // Lists without repeats: the schema refuses those.
    let ports = prop::sample::subsequence(
        vec![json!("80"), json!("8080:80"), json!("127.0.0.1:8081:81/udp"), json!(443), json!({"target": 90, "published": "9090"})],
        0..3,
    );
    let volumes = prop::sample::subsequence(vec!["data:/data", "./rel:/rel:ro", "/abs:/abs", "/anon", "../up:/up"], 0..3);
    let max = names.len().min(1);
    let deps = prop::sample::subsequence(names, 0..=max);
    let health = prop_oneof![
        Just(J::Null),
        text().prop_map(|t| json!({"test": t, "interval": "5s", "retries": 3})),
        prop::collection::vec(text(), 1..3).prop_map(|t| {
            let test = [vec!["CMD".to_owned()], t].concat();
            json!({ "test": test })
        }),
    ];
    (text(), command, env, labels, ports, volumes, deps, health, extension(), any::<bool>(), prop::option::of(text())).prop_map(
        |(image, command, environment, labels, ports, volumes, deps, health, x, env_file, working_dir)| {
            let mut s = json!({
                "image": if image.is_empty() { "busybox".to_owned() } else { image },
                "command": command,
                "environment": environment,
                "labels": labels,
                "ports": ports,
                "volumes": volumes,
                "x-data": x,
            });
            if !deps.is_empty() {
                s["depends_on"] = json!(deps);
            }
            if !health.is_null() {
                s["healthcheck"] = health;
            }
            if env_file {
                s["env_file"] = json!(["app.env", {"path": "missing.env", "required": false}]);
            }
            if let Some(w) = working_dir {
                s["working_dir"] = json!(w);
            }
            s
        },
    )
}

fn project_doc() -> impl Strategy<Value = J> {
    // Services depend only on those before them (no cycles).
    (1usize..4).prop_flat_map(|n| {
        let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        let services: Vec<_> = (0..n).map(|i| service(names[..i].to_vec())).collect();
        (services, extension()).prop_map(move |(services, x)| {
            let services: serde_json::Map<String, J> = services.into_iter().enumerate().map(|(i, s)| (format!("s{i}"), s)).collect();
            json!({"services": services, "volumes": {"data": {}}, "x-top": x})
        })
    })
}

fn load_text(text: &str) -> Result<Project, String> {
    let files: BTreeMap<&Path, String> = [
        (Path::new("/p/app/compose.yaml"), text.to_owned()),
        (Path::new("/p/app/app.env"), "FROM_FILE=1\nQUOTED='$x y'\n".to_owned()),
        (Path::new("/p/app/.env"), "B=bee\n".to_owned()),
    ]
    .into();
    let read = |p: &Path| files.get(p).cloned().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound));
    let environ: BTreeMap<String, String> = [("HOME".to_owned(), "/root".to_owned())].into();
    let opts = Options { workdir: "/p/app".into(), environ, ..Default::default() };
    let loaded = load(&opts, &read).map_err(|e| format!("{e:#}"))?;
    normalise(&loaded, &read).map_err(|e| format!("{e:#}"))
}

fn assert_round_trips(first: &Project) -> Result<(), TestCaseError> {
    let printed = printable(&first.config);
    for text in [atoll_compose::yaml::emit(&printed), serde_json::to_string_pretty(&printed).unwrap()] {
        let again = load_text(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&again.config, &first.config, "{}", text);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// load → config → load is the same project, whether the input was written as JSON or
    /// as YAML.
    #[test]
    fn config_output_loads_as_the_same_project(doc in project_doc(), as_yaml in any::<bool>()) {
        let text = if as_yaml { atoll_compose::yaml::emit(&doc) } else { serde_json::to_string(&doc).unwrap() };
        // Generated values a compose file may not hold (a command that does not split, a
        // port the parser refuses…) are not this property's business.
        let first = load_text(&text);
        prop_assume!(first.is_ok());
        assert_round_trips(&first.unwrap())?;
    }
}

/// Issue 12: `command: ["echo", "$$GREETING"]` printed as `$GREETING`, which interpolates
/// when loaded again.
#[test]
fn config_escapes_dollars_so_the_output_means_the_same() {
    let p =
        load_text("services:\n  s:\n    image: busybox\n    command: [\"echo\", \"$$GREETING\"]\n    environment: {A: \"$${B}\", C: $B}\n")
            .unwrap();
    assert_eq!(p.config["services"]["s"]["command"], json!(["echo", "$GREETING"]));
    let printed = atoll_compose::yaml::emit(&printable(&p.config));
    assert!(printed.contains("- $$GREETING\n") && printed.contains("A: $${B}\n") && printed.contains("C: bee\n"), "{printed}");
    assert_round_trips(&p).unwrap();
}

/// Env files are inlined into `environment` (as docker compose's config does), not printed
/// to be read again.
#[test]
fn config_inlines_env_files() {
    let p = load_text("services:\n  s:\n    image: busybox\n    env_file: [app.env]\n    environment: [FROM_FILE=2]\n").unwrap();
    assert!(p.config["services"]["s"].get("env_file").is_none(), "{}", p.config);
    assert_eq!(p.config["services"]["s"]["environment"], json!({"FROM_FILE": "2", "QUOTED": "$x y"}));
    assert_round_trips(&p).unwrap();
}
