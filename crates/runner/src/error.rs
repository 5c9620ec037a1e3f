//! Why a bundle does not load ([`LoadError`]) and why a request fails ([`RunError`], with the
//! HTTP status the caller answers).

use http::StatusCode;

/// Why a bundle cannot run; nothing of it is kept.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the wasm engine cannot start: {0}")]
    Engine(String),
    #[error("bundle `{name}` is a {runtime} bundle; this runner runs wasm")]
    NotWasm { name: String, runtime: &'static str },
    #[error("bundle `{name}` is a {runtime} bundle; this runner runs deno")]
    NotDeno { name: String, runtime: &'static str },
    #[error("no deno binary: {0}")]
    NoDeno(String),
    #[error("`code.mimeType` is `{0}`; the deno runner runs one JavaScript or TypeScript module (tar archives are not run yet)")]
    DenoCode(String),
    #[error("`entry` is `{entry}`; a single-module bundle's entry is `{expected}` (the code blob, by its MIME type)")]
    Entry { entry: String, expected: &'static str },
    #[error("the bundle asks for isolation `{asked}`; this runner's sandbox is `{given}`")]
    Isolation { asked: &'static str, given: &'static str },
    #[error("{path}: {why}")]
    Path { path: std::path::PathBuf, why: &'static str },
    #[error("cannot prepare the work directory {path}")]
    WorkDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the bundle's instance")]
    Launch(#[from] crate::launch::LaunchError),
    #[error("the bundle's instance did not start: {0}")]
    InstanceStart(String),
    #[error("the module is {size} bytes; the island accepts at most {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("the code is not a WebAssembly module: {0}")]
    Compile(String),
    #[error("the module imports what this runtime does not provide (WASI preview 1 only): {0}")]
    Link(String),
    #[error("routes[{route}].handler `{handler}` is not a function the module exports (it exports: {exports})")]
    MissingExport { route: usize, handler: String, exports: String },
    #[error("export `{export}` has type {found}; {wanted}")]
    WrongSignature { export: String, found: String, wanted: &'static str },
    #[error("the module needs {needed_mb} MiB of memory to start; its limit is {limit_mb} MiB")]
    MemoryTooLarge { needed_mb: u64, limit_mb: u64 },
    #[error("{0}")]
    Unsupported(String),
    #[error("{abi} functions import nothing, but the module imports `{module}::{name}`")]
    PureImports { abi: &'static str, module: String, name: String },
    #[error("the module's start function failed: {0}")]
    Start(String),
    #[error("secret `{0}` is required by the manifest and was not given")]
    MissingSecret(String),
    #[error("secret `{0}` is not declared in the manifest's secrets")]
    UndeclaredSecret(String),
    #[error("the bundle declares file permissions ({0}) but the runner was given no data directory")]
    NoDataDir(String),
    #[error("cannot prepare `{guest}` under the data directory {data_dir}")]
    DataDir {
        guest: String,
        data_dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a request got no response from the bundle.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no route of the bundle matches {method} {path}")]
    NotFound { method: String, path: String },
    #[error("{path} does not answer {method}")]
    MethodNotAllowed { method: String, path: String },
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body is not JSON (at.functions take JSON): {0}")]
    NotJson(String),
    #[error("the bundle is busy: {concurrent} requests running and none finished within {waited_ms} ms")]
    Busy { concurrent: usize, waited_ms: u64 },
    #[error("the request used more than its {limit_ms} ms of CPU time and was stopped")]
    CpuLimit { limit_ms: u64 },
    #[error("the request ran longer than its {limit_ms} ms wall timeout and was stopped")]
    WallTimeout { limit_ms: u64 },
    #[error("the bundle tried to grow its memory to {wanted_mb} MiB past its {limit_mb} MiB limit{}", stderr_tail(.stderr))]
    MemoryLimit { wanted_mb: u64, limit_mb: u64, stderr: String },
    #[error("the bundle wrote more than {limit} bytes of output")]
    OutputTooLarge { limit: usize },
    #[error("the bundle trapped: {trap}{}", stderr_tail(.stderr))]
    Trap { trap: String, stderr: String },
    #[error("the bundle exited with status {code}{}", stderr_tail(.stderr))]
    Exit { code: i32, stderr: String },
    #[error("the bundle's response is not a CGI response: {0}")]
    BadResponse(#[from] crate::cgi::BadResponse),
    #[error("the function's output {0}")]
    BadOutput(String),
    #[error("the bundle's instance exited{} while answering{}", exit_status(.code), stderr_tail(.stderr))]
    InstanceExited { code: Option<i32>, stderr: String },
    #[error("the bundle's instance ran out of its {limit_mb} MiB of memory and was stopped{}", stderr_tail(.stderr))]
    InstanceMemory { limit_mb: u64, stderr: String },
    #[error("the bundle's instance did not start: {0}")]
    InstanceStart(String),
    #[error("the bundle's instance was restarted while this request ran: {0}")]
    Recycled(String),
    #[error("the bundle is stopping")]
    Stopping,
    #[error("the bundle's instance did not answer: {0}")]
    Instance(String),
    #[error("the runner failed: {0}")]
    Internal(String),
}

fn exit_status(code: &Option<i32>) -> String {
    match code {
        Some(c) => format!(" with status {c}"),
        None => " on a signal".to_owned(),
    }
}

/// How a message introduces the instance's stderr.
const STDERR_MARK: &str = " (stderr: ";

fn stderr_tail(stderr: &str) -> String {
    let s = stderr.trim_end();
    if s.is_empty() {
        return String::new();
    }
    let start = s.char_indices().rev().nth(499).map_or(0, |(i, _)| i);
    format!("{STDERR_MARK}{})", &s[start..])
}

/// `message` without what an instance wrote to stderr (which may hold anything: its secrets,
/// other requests' data), for anything that leaves this host: a load or run error's message
/// (or a chain of them) up to where it quotes the stderr.
pub fn cut_stderr(message: &str) -> &str {
    match message.find(STDERR_MARK) {
        Some(i) => &message[..i],
        None => message,
    }
}

impl RunError {
    /// The message without what the instance wrote to stderr: what a client or a summary may see.
    pub fn without_stderr(&self) -> String {
        cut_stderr(&self.to_string()).to_owned()
    }

    /// The status the caller answers with: 4xx for the client's mistakes, 504 when a time limit
    /// cut the request, 503 when the bundle is busy, stopping, or its instance was restarted
    /// under the request (another request's limit), 502 when the bundle misbehaved, 500 for
    /// the runner's own failures.
    pub fn status(&self) -> StatusCode {
        match self {
            RunError::NotFound { .. } => StatusCode::NOT_FOUND,
            RunError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RunError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RunError::NotJson(_) => StatusCode::BAD_REQUEST,
            RunError::Busy { .. } | RunError::Recycled(_) | RunError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
            RunError::CpuLimit { .. } | RunError::WallTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            RunError::MemoryLimit { .. }
            | RunError::OutputTooLarge { .. }
            | RunError::Trap { .. }
            | RunError::Exit { .. }
            | RunError::BadResponse(_)
            | RunError::BadOutput(_)
            | RunError::InstanceExited { .. }
            | RunError::InstanceMemory { .. }
            | RunError::InstanceStart(_)
            | RunError::Instance(_) => StatusCode::BAD_GATEWAY,
            RunError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an instance wrote to stderr never leaves in a message meant for others, whichever
    /// error quotes it, and however deep in a chain.
    #[test]
    fn stderr_is_cut_from_messages_that_leave_the_host() {
        let e = RunError::Exit { code: 1, stderr: "TOKEN=hunter2\n".into() };
        assert_eq!(e.to_string(), "the bundle exited with status 1 (stderr: TOKEN=hunter2)");
        assert_eq!(e.without_stderr(), "the bundle exited with status 1");
        let chain = format!("bundle x: {}: {}", LoadError::InstanceStart("it was not ready in time".into()), e);
        assert_eq!(
            cut_stderr(&chain),
            "bundle x: the bundle's instance did not start: it was not ready in time: the bundle exited with status 1"
        );
        assert_eq!(cut_stderr("no output quoted"), "no output quoted");
        let quiet = RunError::Exit { code: 2, stderr: " \n".into() };
        assert_eq!(quiet.without_stderr(), quiet.to_string());
    }
}
