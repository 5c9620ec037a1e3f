//! The bootstrap module the runner writes into a deno bundle's work directory: the fixed
//! program in `bootstrap.js` (its header describes the protocol with the runner) with the
//! bundle's `CONFIG` above it: the socket to serve on, the module to load, the routes'
//! handlers to check, and the declared paths (`ctx.paths`).

use std::path::Path;

use atoll_atproto::bundle::Manifest;
use serde_json::json;

use super::flags::Paths;

/// The fixed part.
const PROGRAM: &str = include_str!("bootstrap.js");

/// The bootstrap's source for `manifest`'s bundle, whose module is `module` (a file name in
/// the work directory).
pub(crate) fn source(manifest: &Manifest, module: &str, paths: &Paths) -> String {
    let routes: Vec<_> = manifest.routes.iter().enumerate().map(|(index, r)| json!({"index": index, "handler": r.handler})).collect();
    let declared = |list: &[(String, std::path::PathBuf)]| -> Vec<(String, String)> {
        list.iter().map(|(guest, host)| (guest.clone(), host.display().to_string())).collect()
    };
    let mut dirs = serde_json::Map::new();
    for (guest, host) in declared(&paths.read).into_iter().chain(declared(&paths.write)) {
        dirs.insert(guest, host.into());
    }
    let config = json!({
        "socket": path(&paths.socket),
        "entry": format!("./{module}"),
        "routes": routes,
        "paths": dirs,
    });
    // JSON is a JavaScript expression (U+2028 and U+2029 included, since ES2019).
    format!("const CONFIG = {config};\n\n{PROGRAM}")
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_leads_the_program() {
        let m = crate::testing::deno_manifest(&[("GET", "/a/:x", "a"), ("POST", "/b", "fetch")], serde_json::json!({}));
        let paths = Paths::new(Path::new("/w"), Some(Path::new("/d")), &m).unwrap();
        let src = source(&m, "main.ts", &paths);
        let first = src.lines().next().unwrap();
        expect_test::expect![[r#"const CONFIG = {"entry":"./main.ts","paths":{},"routes":[{"handler":"a","index":0},{"handler":"fetch","index":1}],"socket":"/w/http.sock"};"#]]
            .assert_eq(first);
        assert!(src.contains("Deno.serve({ path: socket"));
    }
}
