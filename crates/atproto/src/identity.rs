//! Identity: a handle to its DID (DNS TXT `_atproto.HANDLE`, then
//! `https://HANDLE/.well-known/atproto-did`), a DID to its document (`did:plc` from the PLC
//! directory, `did:web` from the host's `/.well-known/did.json`), and both ways checked: a
//! handle counts only when its DID's document claims it back (`alsoKnownAs: at://HANDLE`).

use atrium_api::did_doc::DidDocument;
use atrium_api::types::string::{Did, Handle};
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::{Client, Error, Result};

/// A resolved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub did: String,
    /// The handle, only when verified both ways (it names the DID and the DID's document
    /// names it).
    pub handle: Option<String>,
    /// The PDS endpoint from the document's `#atproto_pds` service.
    pub pds: String,
    pub document: DidDocument,
}

/// Parses a handle (lower-cased, as handles compare case-insensitively).
pub fn parse_handle(handle: &str) -> Result<String> {
    let lower = handle.trim_start_matches('@').to_ascii_lowercase();
    Handle::new(lower.clone()).map_err(|_| Error::InvalidHandle(handle.to_owned()))?;
    Ok(lower)
}

/// Parses a DID of a method Atoll resolves.
pub fn parse_did(did: &str) -> Result<String> {
    Did::new(did.to_owned()).map_err(|_| Error::InvalidDid(did.to_owned()))?;
    if !(did.starts_with("did:plc:") || did.starts_with("did:web:")) {
        return Err(Error::UnsupportedDidMethod(did.to_owned()));
    }
    Ok(did.to_owned())
}

/// The handles a document claims, in order (`at://HANDLE` entries of `alsoKnownAs`).
pub fn claimed_handles(doc: &DidDocument) -> Vec<String> {
    doc.also_known_as.iter().flatten().filter_map(|aka| aka.strip_prefix("at://")).map(str::to_ascii_lowercase).collect()
}

/// The DIDs a set of `_atproto` TXT strings names (`did=DID`), deduplicated, in order.
pub fn dids_in_txt(records: &[String]) -> Vec<String> {
    let mut dids: Vec<String> = Vec::new();
    for r in records {
        if let Some(did) = r.trim().strip_prefix("did=")
            && !dids.iter().any(|d| d == did)
        {
            dids.push(did.to_owned());
        }
    }
    dids
}

impl Client {
    /// Resolves `identifier` (a handle or a DID) to a verified identity. For a handle, the
    /// DID's document must claim it back or this fails; for a DID, the handle its document
    /// claims is kept only if it resolves back to the DID.
    pub async fn resolve(&self, identifier: &str) -> Result<Identity> {
        let identifier = identifier.trim_start_matches("at://");
        if identifier.starts_with("did:") {
            let did = parse_did(identifier)?;
            let document = self.resolve_did(&did).await?;
            let pds = self.pds_of(&did, &document)?;
            let handle = match claimed_handles(&document).first() {
                Some(h) if parse_handle(h).is_ok() => match self.resolve_handle(h).await {
                    Ok(back) if back == did => Some(h.clone()),
                    Ok(other) => {
                        tracing::warn!(%did, handle = %h, resolves_to = %other, "the handle a DID claims names another DID");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(%did, handle = %h, error = %e, "the handle a DID claims does not resolve");
                        None
                    }
                },
                _ => None,
            };
            Ok(Identity { did, handle, pds, document })
        } else {
            let handle = parse_handle(identifier)?;
            let did = self.resolve_handle(&handle).await?;
            let document = self.resolve_did(&did).await?;
            let also_known_as = claimed_handles(&document);
            if !also_known_as.contains(&handle) {
                return Err(Error::HandleNotClaimed { handle, did, also_known_as });
            }
            let pds = self.pds_of(&did, &document)?;
            Ok(Identity { did, handle: Some(handle), pds, document })
        }
    }

    /// The DID a handle names: its `_atproto` TXT record if it has one, else its well-known
    /// file. Not checked the other way: [`Client::resolve`] does that.
    pub async fn resolve_handle(&self, handle: &str) -> Result<String> {
        let handle = parse_handle(handle)?;
        let dns = match self.txt(&format!("_atproto.{handle}.")).await {
            Ok(records) => {
                let dids = dids_in_txt(&records);
                match dids.len() {
                    1 => return parse_did(&dids[0]),
                    0 => "no did= record".to_owned(),
                    _ => return Err(Error::HandleAmbiguous { handle, dids }),
                }
            }
            Err(e) => e.to_string(),
        };
        let url = self.http.host_url(&handle, None, "/.well-known/atproto-did");
        let well_known = match self.well_known(&url).await {
            Ok(did) => return parse_did(&did),
            Err(e) => e.to_string(),
        };
        Err(Error::HandleNotFound { handle, dns, well_known })
    }

    async fn txt(&self, name: &str) -> Result<Vec<String>> {
        let lookup = self.dns.lookup(name, RecordType::TXT).await.map_err(|e| {
            // hickory's own text prints its whole query with Debug: say it in words.
            let message = if e.is_no_records_found() { "no such record".to_owned() } else { e.to_string() };
            Error::Dns { name: name.trim_end_matches('.').to_owned(), message }
        })?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(txt.txt_data.iter().map(|p| String::from_utf8_lossy(p)).collect::<String>()),
                _ => None,
            })
            .collect())
    }

    async fn well_known(&self, url: &str) -> Result<String> {
        let req = self.http.request(reqwest::Method::GET, url)?;
        let resp = self.http.send(req, url).await?;
        // A DID is short; anything long is not one.
        let body = self.http.read_capped(resp, "a well-known DID", url, 2048).await?;
        Ok(String::from_utf8_lossy(&body).trim().to_owned())
    }

    /// The document of `did` (`did:plc` from the PLC directory, `did:web` from its host),
    /// checked to be that DID's.
    pub async fn resolve_did(&self, did: &str) -> Result<DidDocument> {
        let did = parse_did(did)?;
        let url = if let Some(id) = did.strip_prefix("did:plc:") {
            format!("{}/did:plc:{id}", self.plc_url.trim_end_matches('/'))
        } else {
            let host = did.strip_prefix("did:web:").unwrap_or_default();
            // ATProto's did:web names a host only (no path); a port is percent-encoded.
            if host.contains(':') {
                return Err(Error::InvalidDid(format!("{did} (ATProto's did:web names a host, not a path)")));
            }
            let decoded = host.replace("%3A", ":").replace("%3a", ":");
            let (name, port) = match decoded.rsplit_once(':') {
                Some((n, p)) => (n.to_owned(), Some(p.parse::<u16>().map_err(|_| Error::InvalidDid(did.clone()))?)),
                None => (decoded, None),
            };
            self.http.host_url(&name, port, "/.well-known/did.json")
        };
        let document: DidDocument = match self.http.get_json("a DID document", &url).await {
            Err(Error::Status { status: 404 | 410, .. }) => return Err(Error::DidNotFound { did, url }),
            other => other?,
        };
        if document.id != did {
            return Err(Error::DocumentIdMismatch { did, url, found: document.id });
        }
        Ok(document)
    }

    fn pds_of(&self, did: &str, document: &DidDocument) -> Result<String> {
        let pds = document.get_pds_endpoint().ok_or_else(|| Error::NoPds { did: did.to_owned() })?;
        self.http.check_url(&pds)?;
        Ok(pds.trim_end_matches('/').to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_records_name_one_did_or_several() {
        let r = |v: &[&str]| dids_in_txt(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(r(&["did=did:plc:abc", "v=spf1", "did=did:plc:abc"]), ["did:plc:abc"]);
        assert_eq!(r(&["did=did:plc:a", "did=did:web:b.example"]).len(), 2);
        assert!(r(&["hello"]).is_empty());
    }

    #[test]
    fn handles_and_dids_are_checked_before_any_lookup() {
        assert_eq!(parse_handle("@Alice.Example.COM").unwrap(), "alice.example.com");
        assert!(matches!(parse_handle("no_dots"), Err(Error::InvalidHandle(_))));
        assert!(matches!(parse_handle("a..b"), Err(Error::InvalidHandle(_))));
        assert!(parse_did("did:plc:abcdefghijklmnopqrstuvwx").is_ok());
        assert!(matches!(parse_did("did:key:z6Mk"), Err(Error::UnsupportedDidMethod(_))));
        assert!(matches!(parse_did("plc:abc"), Err(Error::InvalidDid(_))));
    }

    #[test]
    fn a_document_claims_handles_through_at_uris_only() {
        let doc: DidDocument = serde_json::from_value(serde_json::json!({
            "id": "did:plc:x", "alsoKnownAs": ["https://alice.example", "at://Alice.Test"]
        }))
        .unwrap();
        assert_eq!(claimed_handles(&doc), ["alice.test"]);
    }
}
