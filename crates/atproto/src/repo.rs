//! Bundles in a repository: fetch one by its `at://` URI (identity checked, record parsed,
//! code fetched and checked against its CID) and publish one (code uploaded, record written,
//! earlier versions' code kept referenced so the PDS does not collect it).

use crate::blob::BlobCache;
use crate::bundle::functions::{self, FunctionRecord};
use crate::bundle::{self, Manifest};
use crate::xrpc::{Blob, Session};
use crate::{AtUri, Client, Error, Identity, Result};

/// How many earlier versions' code a record keeps referenced (the lexicon's `previousCode`).
pub const MAX_PREVIOUS_CODE: usize = 16;

/// A bundle as fetched: where it came from, its manifest and its (checked) code.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The record's URI with the DID as authority.
    pub uri: AtUri,
    pub identity: Identity,
    /// The record version's CID.
    pub record_cid: Option<String>,
    pub manifest: Manifest,
    /// The code blob's bytes (none for oci bundles).
    pub code: Option<Vec<u8>>,
}

/// The collection of follows in a repository (Bluesky's social graph, `app.bsky.graph.follow`:
/// each record's `subject` is the DID followed).
pub const FOLLOW_NSID: &str = "app.bsky.graph.follow";

/// The most follows [`Client::follows`] reads of one account (pages of 100).
pub const MAX_FOLLOWS: usize = 10_000;

impl Client {
    /// The DIDs `who` (a handle or DID, resolved both ways) follows: the `subject` of every
    /// `app.bsky.graph.follow` record in its repository, read page by page (at most
    /// [`MAX_FOLLOWS`]; more is an error, not a silent cut). Records that name no DID are skipped.
    pub async fn follows(&self, who: &str) -> Result<(Identity, Vec<String>)> {
        let id = self.resolve(who).await?;
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..=MAX_FOLLOWS / 100 {
            let (page, next) = self.list_records(&id.pds, &id.did, FOLLOW_NSID, 100, cursor.clone()).await?;
            let empty = page.is_empty();
            out.extend(page.iter().filter_map(|r| r.value.get("subject")?.as_str()).filter(|d| d.starts_with("did:")).map(str::to_owned));
            if out.len() > MAX_FOLLOWS {
                return Err(Error::Xrpc {
                    nsid: "com.atproto.repo.listRecords",
                    pds: id.pds.clone(),
                    message: format!(
                        "{} follows more than {MAX_FOLLOWS} accounts, more than Atoll reads: allow authors one by one",
                        id.did
                    ),
                });
            }
            match next {
                // A cursor that does not move would page forever.
                Some(c) if !empty && cursor.as_ref() != Some(&c) => cursor = Some(c),
                _ => {
                    out.sort();
                    out.dedup();
                    return Ok((id, out));
                }
            }
        }
        Err(Error::Xrpc {
            nsid: "com.atproto.repo.listRecords",
            pds: id.pds.clone(),
            message: format!(
                "{}'s follows run past {} pages, more than Atoll reads: allow authors one by one",
                id.did,
                MAX_FOLLOWS / 100 + 1
            ),
        })
    }

    /// Fetches the bundle at `uri` (`dev.atoll.bundle`, or `at.functions.metadata`, run under
    /// `name`, or its record key): resolves the authority both ways, reads the record,
    /// validates it, and fetches its code into `cache` checked against its CID.
    pub async fn fetch_bundle(&self, cache: &BlobCache, uri: &AtUri, name: Option<&str>) -> Result<Fetched> {
        self.check_bundle_uri(uri)?;
        let identity = self.resolve(&uri.authority).await?;
        self.fetch_bundle_of(cache, uri, identity, name).await
    }

    /// Whether `uri` names a bundle's collection ([`Error::NotABundle`] if not).
    pub fn check_bundle_uri(&self, uri: &AtUri) -> Result<()> {
        if uri.collection != bundle::NSID && uri.collection != functions::NSID {
            return Err(Error::NotABundle { uri: uri.to_string(), collection: uri.collection.clone() });
        }
        Ok(())
    }

    /// [`Client::fetch_bundle`] of an author already resolved (`identity`, from
    /// [`Client::resolve`] of `uri`'s authority): so a caller can check who it is before
    /// anything of theirs is downloaded.
    pub async fn fetch_bundle_of(&self, cache: &BlobCache, uri: &AtUri, identity: Identity, name: Option<&str>) -> Result<Fetched> {
        self.check_bundle_uri(uri)?;
        let at_did = AtUri { authority: identity.did.clone(), ..uri.clone() };
        let record = self.get_record(&identity.pds, &identity.did, &uri.collection, &uri.rkey).await?;
        let invalid = |source| Error::InvalidRecord { uri: at_did.to_string(), source };
        let manifest = if uri.collection == bundle::NSID {
            Manifest::from_record(&record.value).map_err(invalid)?
        } else {
            let name = name.map_or_else(|| uri.rkey.to_ascii_lowercase(), str::to_owned);
            FunctionRecord::from_record(&record.value).and_then(|f| f.to_manifest(&name)).map_err(invalid)?
        };
        let code = match &manifest.code {
            Some(blob) => {
                let limit = self.http.limits.max_blob_bytes;
                if blob.size > limit {
                    return Err(Error::TooLarge { what: "the bundle's code", url: at_did.to_string(), limit });
                }
                Some(self.fetch_blob(cache, &identity.pds, &identity.did, &blob.cid).await?)
            }
            None => None,
        };
        Ok(Fetched { uri: at_did, identity, record_cid: record.cid, manifest, code })
    }

    /// Publishes `manifest` as `at://SESSION-DID/dev.atoll.bundle/RKEY` (the record key is the
    /// bundle's name) with `code` (bytes and MIME type; none for oci) uploaded as its code. The
    /// code of the record it replaces moves to `previousCode` (newest first, at most
    /// [`MAX_PREVIOUS_CODE`]) so islands still running it can fetch it. The manifest is
    /// validated before anything is written. Returns the record's URI and CID.
    pub async fn publish_bundle(&self, session: &Session, manifest: &Manifest, code: Option<(Vec<u8>, &str)>) -> Result<(String, String)> {
        let rkey = manifest.name.clone();
        let uri = format!("at://{}/{}/{rkey}", session.did, bundle::NSID);
        let mut previous: Vec<Blob> = match self.get_record(&session.pds, &session.did, bundle::NSID, &rkey).await {
            Ok(old) => {
                let mut blobs: Vec<Blob> = old.value.get("code").and_then(|c| Blob::from_json(c).ok()).into_iter().collect();
                if let Some(list) = old.value.get("previousCode").and_then(|p| p.as_array()) {
                    blobs.extend(list.iter().filter_map(|b| Blob::from_json(b).ok()));
                }
                blobs
            }
            Err(Error::RecordNotFound { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut m = manifest.clone();
        m.code = None;
        if let Some((bytes, mime)) = code {
            // Check the manifest before uploading, with a stand-in for the code.
            let mut check = m.clone();
            check.code = Some(Blob { cid: crate::BlobCid::of(&bytes), mime_type: mime.to_owned(), size: bytes.len() as u64 });
            Manifest::from_record(&check.to_record()).map_err(|source| Error::InvalidRecord { uri: uri.clone(), source })?;
            m.code = Some(self.upload_blob(session, bytes, mime).await?);
        }
        let current = m.code.as_ref().map(|c| c.cid);
        let mut seen = std::collections::HashSet::new();
        previous.retain(|b| Some(b.cid) != current && seen.insert(b.cid));
        previous.truncate(MAX_PREVIOUS_CODE);
        m.previous_code = previous;
        let record = m.to_record();
        Manifest::from_record(&record).map_err(|source| Error::InvalidRecord { uri: uri.clone(), source })?;
        self.put_record(session, bundle::NSID, &rkey, &record).await
    }
}
