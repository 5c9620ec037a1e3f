//! XRPC calls to a PDS: atrium's typed `com.atproto` calls (getRecord, createSession,
//! putRecord) over our transport, so they obey its https rule and its size, depth and time
//! limits; uploadBlob and sync.getBlob by hand, because they carry raw bytes: atrium sends
//! every blob as `*/*` and reads a blob whole under no cap of its own, while here a blob is
//! read under the blob limit and checked against its CID before anyone sees it.

use atrium_api::client::AtpServiceClient;
use atrium_api::types::string::{AtIdentifier, Nsid, RecordKey};
use atrium_api::types::{BlobRef, TypedBlobRef, Unknown};
use atrium_xrpc::http::{Request, Response};
use atrium_xrpc::types::AuthorizationToken;

use crate::blob::{BlobCache, BlobCid};
use crate::http::Http;
use crate::{Client, Error, Result};

/// One PDS, optionally with a session's access token; what atrium's client runs over.
struct Conn {
    http: Http,
    base: String,
    token: Option<String>,
}

impl atrium_xrpc::HttpClient for Conn {
    async fn send_http(
        &self,
        request: Request<Vec<u8>>,
    ) -> std::result::Result<Response<Vec<u8>>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        let url = request.uri().to_string();
        let (parts, body) = request.into_parts();
        let mut req = self.http.request(parts.method, &url)?.headers(parts.headers).body(body);
        req = req.header(reqwest::header::ACCEPT, "application/json");
        // Errors (4xx/5xx) go back to atrium, which reads the XRPC error out of them.
        let resp = req.send().await.map_err(|e| self.http.transport_error(&url, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = self.http.read_json(resp, "an XRPC answer", &url).await?;
        let mut out = Response::builder().status(status);
        if let Some(h) = out.headers_mut() {
            *h = headers;
        }
        Ok(out.body(body)?)
    }
}

impl atrium_xrpc::XrpcClient for Conn {
    fn base_uri(&self) -> String {
        self.base.clone()
    }

    async fn authorization_token(&self, _is_refresh: bool) -> Option<AuthorizationToken> {
        self.token.clone().map(AuthorizationToken::Bearer)
    }
}

/// Maps atrium's error back to ours: our transport's errors come back as they were.
fn xrpc_error<E: std::fmt::Debug + std::fmt::Display>(nsid: &'static str, pds: &str, e: atrium_xrpc::Error<E>) -> Error {
    let message = match e {
        atrium_xrpc::Error::HttpClient(inner) => match inner.downcast::<Error>() {
            Ok(ours) => return *ours,
            Err(other) => other.to_string(),
        },
        atrium_xrpc::Error::XrpcResponse(r) => match r.error {
            Some(kind) => format!("HTTP {}: {kind}", r.status.as_u16()),
            None => format!("HTTP {}", r.status.as_u16()),
        },
        atrium_xrpc::Error::Authentication(h) => format!("authentication required ({})", h.to_str().unwrap_or("?")),
        atrium_xrpc::Error::SerdeJson(j) => format!("the answer does not match the lexicon: {j}"),
        other => other.to_string(),
    };
    Error::Xrpc { nsid, pds: pds.to_owned(), message }
}

/// A logged-in session on a PDS.
#[derive(Clone)]
pub struct Session {
    pub pds: String,
    pub did: String,
    pub handle: String,
    access_jwt: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("pds", &self.pds).field("did", &self.did).field("handle", &self.handle).finish_non_exhaustive()
    }
}

/// A record as getRecord returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub uri: String,
    /// The record version's CID (dag-cbor), if the PDS said.
    pub cid: Option<String>,
    pub value: serde_json::Value,
}

/// A blob reference, as a record holds it (`{"$type":"blob","ref":{"$link":CID},…}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub cid: BlobCid,
    pub mime_type: String,
    pub size: u64,
}

impl Blob {
    /// The JSON of this reference inside a record.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"$type": "blob", "ref": {"$link": self.cid.to_string()}, "mimeType": self.mime_type, "size": self.size})
    }

    /// Reads a blob reference out of a record's JSON (typed or legacy form).
    pub fn from_json(value: &serde_json::Value) -> std::result::Result<Blob, String> {
        let blob: BlobRef = serde_json::from_value(value.clone()).map_err(|_| "not a blob reference".to_owned())?;
        let (cid, mime_type, size) = match blob {
            BlobRef::Typed(TypedBlobRef::Blob(b)) => (b.r#ref.0.to_string(), b.mime_type, b.size as u64),
            BlobRef::Untyped(u) => (u.cid, u.mime_type, 0),
        };
        let cid = BlobCid::parse(&cid).map_err(|e| e.to_string())?;
        Ok(Blob { cid, mime_type, size })
    }
}

impl Client {
    fn conn(&self, pds: &str, token: Option<String>) -> Result<AtpServiceClient<Conn>> {
        self.http.check_url(pds)?;
        Ok(AtpServiceClient::new(Conn { http: self.http.clone(), base: pds.trim_end_matches('/').to_owned(), token }))
    }

    /// `com.atproto.server.createSession` with an identifier (handle or DID) and an (app)
    /// password.
    pub async fn create_session(&self, pds: &str, identifier: &str, password: &str) -> Result<Session> {
        use atrium_api::com::atproto::server::create_session;
        let input = create_session::InputData {
            allow_takendown: None,
            auth_factor_token: None,
            identifier: identifier.to_owned(),
            password: password.to_owned(),
        };
        let out = self
            .conn(pds, None)?
            .service
            .com
            .atproto
            .server
            .create_session(input.into())
            .await
            .map_err(|e| xrpc_error(create_session::NSID, pds, e))?;
        Ok(Session {
            pds: pds.trim_end_matches('/').to_owned(),
            did: out.did.to_string(),
            handle: out.handle.to_string(),
            access_jwt: out.data.access_jwt,
        })
    }

    /// `com.atproto.repo.getRecord`: the record `collection/rkey` of `repo` (a DID) on `pds`.
    pub async fn get_record(&self, pds: &str, repo: &str, collection: &str, rkey: &str) -> Result<Record> {
        use atrium_api::com::atproto::repo::get_record;
        let bad = |m: String| Error::Xrpc { nsid: get_record::NSID, pds: pds.to_owned(), message: m };
        let params = get_record::ParametersData {
            cid: None,
            collection: Nsid::new(collection.to_owned()).map_err(|e| bad(format!("collection `{collection}`: {e}")))?,
            repo: repo.parse::<AtIdentifier>().map_err(|e| bad(format!("repo `{repo}`: {e}")))?,
            rkey: RecordKey::new(rkey.to_owned()).map_err(|e| bad(format!("record key `{rkey}`: {e}")))?,
        };
        let out = self.conn(pds, None)?.service.com.atproto.repo.get_record(params.into()).await.map_err(|e| match e {
            atrium_xrpc::Error::XrpcResponse(atrium_xrpc::error::XrpcError {
                error: Some(atrium_xrpc::error::XrpcErrorKind::Custom(get_record::Error::RecordNotFound(_))),
                ..
            }) => Error::RecordNotFound { uri: format!("at://{repo}/{collection}/{rkey}") },
            e => xrpc_error(get_record::NSID, pds, e),
        })?;
        let value = serde_json::to_value(&out.data.value).map_err(|e| bad(format!("the record's value: {e}")))?;
        Ok(Record { uri: out.data.uri, cid: out.data.cid.map(|c| c.as_ref().to_string()), value })
    }

    /// `com.atproto.repo.listRecords`: one page (at most `limit`, 1 to 100) of `repo`'s records
    /// in `collection`, from `cursor`; and the cursor of the next page, if any.
    pub async fn list_records(
        &self,
        pds: &str,
        repo: &str,
        collection: &str,
        limit: u8,
        cursor: Option<String>,
    ) -> Result<(Vec<Record>, Option<String>)> {
        use atrium_api::com::atproto::repo::list_records;
        let bad = |m: String| Error::Xrpc { nsid: list_records::NSID, pds: pds.to_owned(), message: m };
        let params = list_records::ParametersData {
            collection: Nsid::new(collection.to_owned()).map_err(|e| bad(format!("collection `{collection}`: {e}")))?,
            cursor,
            limit: Some(limit.clamp(1, 100).try_into().map_err(|e| bad(format!("limit: {e}")))?),
            repo: repo.parse::<AtIdentifier>().map_err(|e| bad(format!("repo `{repo}`: {e}")))?,
            reverse: None,
        };
        let out = self
            .conn(pds, None)?
            .service
            .com
            .atproto
            .repo
            .list_records(params.into())
            .await
            .map_err(|e| xrpc_error(list_records::NSID, pds, e))?;
        let mut records = Vec::with_capacity(out.data.records.len());
        for r in out.data.records {
            let value = serde_json::to_value(&r.data.value).map_err(|e| bad(format!("a record's value: {e}")))?;
            records.push(Record { uri: r.data.uri, cid: Some(r.data.cid.as_ref().to_string()), value });
        }
        Ok((records, out.data.cursor))
    }

    /// `com.atproto.repo.putRecord`: writes `record` (its `$type` must be `collection`) at
    /// `collection/rkey` in the session's repo; returns the record's `at://` URI and CID.
    pub async fn put_record(
        &self,
        session: &Session,
        collection: &str,
        rkey: &str,
        record: &serde_json::Value,
    ) -> Result<(String, String)> {
        use atrium_api::com::atproto::repo::put_record;
        let bad = |m: String| Error::Xrpc { nsid: put_record::NSID, pds: session.pds.clone(), message: m };
        let input = put_record::InputData {
            collection: Nsid::new(collection.to_owned()).map_err(|e| bad(format!("collection `{collection}`: {e}")))?,
            record: serde_json::from_value::<Unknown>(record.clone()).map_err(|e| bad(format!("the record: {e}")))?,
            repo: session.did.parse::<AtIdentifier>().map_err(|e| bad(e.to_string()))?,
            rkey: RecordKey::new(rkey.to_owned()).map_err(|e| bad(format!("record key `{rkey}`: {e}")))?,
            swap_commit: None,
            swap_record: None,
            // Atoll's lexicon is not one the PDS knows; it stores the record unvalidated.
            validate: None,
        };
        let out = self
            .conn(&session.pds, Some(session.access_jwt.clone()))?
            .service
            .com
            .atproto
            .repo
            .put_record(input.into())
            .await
            .map_err(|e| xrpc_error(put_record::NSID, &session.pds, e))?;
        Ok((out.data.uri, out.data.cid.as_ref().to_string()))
    }

    /// `com.atproto.repo.uploadBlob`: uploads `bytes` as `mime_type`; the PDS keeps it only
    /// once a record references it.
    pub async fn upload_blob(&self, session: &Session, bytes: Vec<u8>, mime_type: &str) -> Result<Blob> {
        const NSID: &str = "com.atproto.repo.uploadBlob";
        let url = format!("{}/xrpc/{NSID}", session.pds);
        let expected = BlobCid::of(&bytes);
        let req = self
            .http
            .request(reqwest::Method::POST, &url)?
            .bearer_auth(&session.access_jwt)
            .header(reqwest::header::CONTENT_TYPE, mime_type)
            .body(bytes);
        let resp = self.http.send(req, &url).await?;
        let body = self.http.read_json(resp, "an XRPC answer", &url).await?;
        let bad = |m: String| Error::Xrpc { nsid: NSID, pds: session.pds.clone(), message: m };
        let out: serde_json::Value = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
        let blob = Blob::from_json(&out["blob"]).map_err(|m| bad(format!("its answer's blob: {m}")))?;
        if blob.cid != expected {
            return Err(bad(format!("it stored the blob as {}, but its bytes are {expected}", blob.cid)));
        }
        Ok(blob)
    }

    /// The blob `cid` of `did`: from `cache` if there (and intact), else
    /// `com.atproto.sync.getBlob` on `pds`, read under the blob limit, checked against `cid`,
    /// then cached. A corrupt cache entry is removed and fetched again.
    pub async fn fetch_blob(&self, cache: &BlobCache, pds: &str, did: &str, cid: &BlobCid) -> Result<Vec<u8>> {
        match cache.get(cid) {
            Ok(Some(bytes)) => return Ok(bytes),
            Ok(None) => {}
            Err(e @ Error::CidMismatch { .. }) => tracing::warn!(error = %e, "fetching the blob again"),
            Err(e) => return Err(e),
        }
        let mut url = self.http.check_url(&format!("{}/xrpc/com.atproto.sync.getBlob", pds.trim_end_matches('/')))?;
        url.query_pairs_mut().append_pair("did", did).append_pair("cid", &cid.to_string());
        let shown = url.to_string();
        let resp = self.http.send(self.http.request(reqwest::Method::GET, &shown)?, &shown).await?;
        let bytes = self.http.read_capped(resp, "a blob", &shown, self.http.limits.max_blob_bytes).await?;
        cid.verify(&bytes, &shown)?;
        cache.put(cid, &bytes)?;
        Ok(bytes)
    }
}
